"""Candidate pools: per query, the retrieved candidates with every labelled positive removed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa


@dataclass
class QueryPool:
    """One query's candidates (positives removed), in rank order, and its positives' scores."""

    query_id: str
    doc_ids: list[str]
    ranks: np.ndarray  # int32, the source rank of each candidate
    scores: np.ndarray  # float32, the retriever score of each candidate
    positives: list[tuple[str, float | None]] = field(default_factory=list)  # (pos_id, s(q, d+))
    # Every corpus doc id (shared by all pools), for strategies that draw beyond the candidates
    # (random, star). Index i >= len(pool) means corpus_ids[i - len(pool)]: see ``neg_id``.
    corpus_ids: Sequence[str] | None = None
    cluster_id: int | None = None  # the query's cluster (clusters.parquet), when given
    # Teacher scores (negmine.rescore), when the run has scored_candidates/scored_positives tables:
    # ce_scores/ce_probs per candidate (NaN where the teacher did not score it), positive_ce per positive.
    ce_scores: np.ndarray | None = None
    ce_probs: np.ndarray | None = None
    positive_ce: list[float | None] | None = None
    # Documents removed from this query's pool as likely false negatives (duplicates of a positive, or a
    # false-negative probability above the cap): never a negative, not even as a corpus draw.
    excluded: frozenset[str] = frozenset()
    excluded_everywhere: frozenset[str] = frozenset()  # shared by every pool (duplicates of any positive)

    def is_excluded(self, doc_id: str) -> bool:
        return doc_id in self.excluded or doc_id in self.excluded_everywhere

    def __len__(self) -> int:
        return len(self.doc_ids)

    def neg_id(self, index: int) -> str:
        """The doc id of a strategy's index: a candidate below ``len(self)``, else a corpus document."""
        if index < len(self.doc_ids):
            return self.doc_ids[index]
        return self.corpus_ids[index - len(self.doc_ids)]


def build_pools(
    candidates: pa.Table,
    positive_scores: pa.Table | None,
    qrels: pa.Table,
    queries: pa.Table,
    corpus: pa.Table | None = None,
    clusters: pa.Table | None = None,
    exclude: dict[str, set[str]] | None = None,
    exclude_everywhere: frozenset[str] = frozenset(),
) -> list[QueryPool]:
    """Pools in the order of ``queries``; a query without a positive in ``qrels`` gets no pool.

    ``corpus`` (its doc ids) is shared by every pool for strategies that draw from the whole corpus;
    ``clusters`` sets each pool's ``cluster_id``; ``exclude[query_id]`` are documents removed from that
    query's pool like its labelled positives (likely false negatives), ``exclude_everywhere`` from every pool.
    """
    exclude = exclude or {}
    corpus_ids = corpus.column("doc_id").to_pylist() if corpus is not None else None
    cluster_of = dict(zip(*(clusters.column(c).to_pylist() for c in ("query_id", "cluster_id")))) if clusters is not None else {}
    positives: dict[str, list[str]] = {}
    labelled: dict[str, set[str]] = {}
    for qid, did, rel in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        if rel > 0:
            positives.setdefault(qid, []).append(did)
            labelled.setdefault(qid, set()).add(did)
    pos_score: dict[tuple[str, str], float] = {}
    if positive_scores is not None:
        for qid, did, s in zip(*(positive_scores.column(c).to_pylist() for c in ("query_id", "doc_id", "score"))):
            pos_score[(qid, did)] = s
    order = candidates.sort_by([("query_id", "ascending"), ("rank", "ascending")])
    grouped: dict[str, tuple[list, list, list, set]] = {}
    for qid, did, rank, score in zip(*(order.column(c).to_pylist() for c in ("query_id", "doc_id", "rank", "score"))):
        if did in labelled.get(qid, ()) or did in exclude.get(qid, ()) or did in exclude_everywhere:
            continue
        ids, ranks, scores, seen = grouped.setdefault(qid, ([], [], [], set()))
        if did in seen:  # the same document twice (e.g. a fused pool): keep its best rank
            continue
        seen.add(did)
        ids.append(did)
        ranks.append(rank)
        scores.append(score)
    pools = []
    for qid in queries.column("query_id").to_pylist():
        if qid not in positives:
            continue
        ids, ranks, scores, _ = grouped.get(qid, ([], [], [], set()))
        pools.append(
            QueryPool(
                query_id=qid,
                doc_ids=ids,
                ranks=np.asarray(ranks, dtype=np.int32),
                scores=np.asarray(scores, dtype=np.float32),
                positives=[(p, pos_score.get((qid, p))) for p in positives[qid]],
                corpus_ids=corpus_ids,
                cluster_id=cluster_of.get(qid),
                excluded=frozenset(exclude.get(qid, ())),
                excluded_everywhere=exclude_everywhere,
            )
        )
    return pools


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the keys, not on processing order."""
    words = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys]
    return np.random.default_rng([seed, *words])


def attach_teacher_scores(pools: list[QueryPool], scored_candidates: pa.Table, scored_positives: pa.Table | None = None) -> list[QueryPool]:
    """Fill each pool's ``ce_scores``/``ce_probs`` (and ``positive_ce``) from the rescore tables, in place."""
    by_pair = {
        (q, d): (s, p)
        for q, d, s, p in zip(*(scored_candidates.column(c).to_pylist() for c in ("query_id", "doc_id", "ce_score", "ce_prob")))
    }
    pos = {}
    if scored_positives is not None:
        pos = dict(zip(zip(*(scored_positives.column(c).to_pylist() for c in ("query_id", "doc_id"))), scored_positives.column("ce_score").to_pylist()))
    nan = (float("nan"), float("nan"))
    for pool in pools:
        pairs = [by_pair.get((pool.query_id, d), nan) for d in pool.doc_ids]
        pool.ce_scores = np.asarray([s for s, _ in pairs], dtype=np.float32)
        pool.ce_probs = np.asarray([p for _, p in pairs], dtype=np.float32)
        pool.positive_ce = [pos.get((pool.query_id, p), by_pair.get((pool.query_id, p), (None,))[0]) for p, _ in pool.positives]
    return pools
