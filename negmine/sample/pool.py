"""Candidate pools: per query, the retrieved candidates with every labelled positive removed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

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

    def __len__(self) -> int:
        return len(self.doc_ids)


def build_pools(candidates: pa.Table, positive_scores: pa.Table | None, qrels: pa.Table, queries: pa.Table) -> list[QueryPool]:
    """Pools in the order of ``queries``; a query without a positive in ``qrels`` gets no pool."""
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
        if did in labelled.get(qid, ()):
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
            )
        )
    return pools


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the keys, not on processing order."""
    words = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys]
    return np.random.default_rng([seed, *words])
