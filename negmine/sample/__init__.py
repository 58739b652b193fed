"""Stage 4 — sample negatives from candidate pools with a strategy; writes the negatives triple table.

Every strategy is a function ``(pool, pos_index, num_negatives, rng, **params) -> indices into the
pool`` in one module of this package. An index ``i >= len(pool)`` names a corpus document
(``pool.corpus_ids[i - len(pool)]``, see :meth:`QueryPool.neg_id`): such negatives get null
``retriever_score`` and ``source_rank``. A strategy that assigns curriculum stages returns
``(indices, stages)`` instead; every other strategy's negatives get a null ``stage``.
The driver here keeps the invariants of docs/data-contract.md for all of them: labelled positives are removed
from pools before a strategy sees them (and a corpus draw that returns one is rejected), negative
doc ids are unique per pair, at most ``num_negatives`` per (query, positive), and each pair's generator depends only on
(seed, query_id, pos_id), so the same inputs and seed give byte-identical output.
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa

from negmine.errors import BadInputError, StageError
from negmine.sample.curriculum import curriculum_negatives
from negmine.sample.pool import QueryPool, attach_teacher_scores, build_pools, rng_for
from negmine.sample.denoise import denoise_negatives
from negmine.sample.rank_range import range_negatives
from negmine.sample.simans import simans_negatives
from negmine.sample.positive_aware import positive_aware_negatives
from negmine.sample.star import star_negatives
from negmine.sample.tas_balanced import tas_balanced_negatives
from negmine.sample.topk import topk_negatives
from negmine.sample.uniform import random_negatives
from negmine.schemas import NEGATIVES

STRATEGIES: dict[str, Callable[..., np.ndarray]] = {
    "topk": topk_negatives,
    "range": range_negatives,
    "simans": simans_negatives,
    "random": random_negatives,
    "positive-aware": positive_aware_negatives,
    "star": star_negatives,
    "tas-balanced": tas_balanced_negatives,
    "curriculum": curriculum_negatives,
    "denoise": denoise_negatives,
}

# Tables a strategy needs beyond candidates, positive scores, qrels and queries.
NEEDS: dict[str, tuple[str, ...]] = {
    "random": ("corpus",),
    "star": ("corpus",),
    "tas-balanced": ("clusters",),
}


def strategy_params(strategy: str) -> dict[str, object]:
    """The tunable parameters of a strategy and their defaults (from its signature)."""
    if strategy not in STRATEGIES:
        raise BadInputError("--strategy", f"unknown value {strategy!r}; choose from {sorted(STRATEGIES)}")
    signature = inspect.signature(STRATEGIES[strategy])
    return {n: p.default for n, p in list(signature.parameters.items())[4:]}


def sample_pools(pools: list[QueryPool], strategy: str, num_negatives: int = 7, seed: int = 42, **params) -> tuple[pa.Table, dict]:
    """Apply ``strategy`` to every (query, positive) pair of ``pools``; return (negatives, stats)."""
    allowed = strategy_params(strategy)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise StageError(f"strategy {strategy!r} has no parameter(s) {unknown}; it takes {sorted(allowed)}")
    if num_negatives < 1:
        raise StageError(f"num_negatives must be at least 1, got {num_negatives}")
    fn = STRATEGIES[strategy]
    cols: dict[str, list] = {k: [] for k in ("query_id", "pos_id", "neg_id", "neg_rank", "score", "pos_score", "source_rank", "stage", "cluster_id", "ce_score", "pos_ce_score")}
    short = 0
    per_pair = Counter()
    for pool in pools:
        for pos_index, (pos_id, pos_score) in enumerate(pool.positives):
            rng = rng_for(seed, pool.query_id, pos_id)
            chosen = fn(pool, pos_index, num_negatives, rng, **params)
            chosen, stages = chosen if isinstance(chosen, tuple) else (chosen, None)
            chosen = np.asarray(chosen, dtype=np.int64)
            neg_ids = [pool.neg_id(int(i)) for i in chosen]
            positive_ids = {p for p, _ in pool.positives}
            if len(chosen) > num_negatives or len(set(neg_ids)) != len(neg_ids) or positive_ids & set(neg_ids) or any(map(pool.is_excluded, neg_ids)):
                raise StageError(f"strategy {strategy!r} broke an invariant for query {pool.query_id!r}")
            short += len(chosen) < num_negatives
            per_pair[len(chosen)] += 1
            for neg_rank, (i, neg_id) in enumerate(zip(chosen, neg_ids), start=1):
                candidate = i < len(pool)
                cols["query_id"].append(pool.query_id)
                cols["pos_id"].append(pos_id)
                cols["neg_id"].append(neg_id)
                cols["neg_rank"].append(neg_rank)
                cols["score"].append(float(pool.scores[i]) if candidate else None)
                cols["pos_score"].append(pos_score)
                cols["source_rank"].append(int(pool.ranks[i]) if candidate else None)
                cols["stage"].append(None if stages is None else int(stages[neg_rank - 1]))
                cols["cluster_id"].append(pool.cluster_id)
                cols["ce_score"].append(_teacher_score(pool, i))
                cols["pos_ce_score"].append(pool.positive_ce[pos_index] if pool.positive_ce is not None else None)
    n = len(cols["query_id"])
    table = pa.table(
        {
            "query_id": cols["query_id"],
            "pos_id": cols["pos_id"],
            "neg_id": cols["neg_id"],
            "neg_rank": pa.array(cols["neg_rank"], pa.int32()),
            "strategy": [strategy] * n,
            "retriever_score": pa.array(cols["score"], pa.float32()),
            "pos_retriever_score": pa.array(cols["pos_score"], pa.float32()),
            "ce_score": pa.array(cols["ce_score"], pa.float32()),
            "pos_ce_score": pa.array(cols["pos_ce_score"], pa.float32()),
            "source_rank": pa.array(cols["source_rank"], pa.int32()),
            "cluster_id": pa.array(cols["cluster_id"], pa.int32()),
            "stage": pa.array(cols["stage"], pa.int32()),
        },
        schema=NEGATIVES,
    )
    pairs = sum(per_pair.values())
    stats = {
        "strategy": strategy,
        "queries": len({p.query_id for p in pools if p.positives}),
        "pairs": pairs,
        "negatives": n,
        "negatives_per_pair": round(n / pairs, 3) if pairs else 0.0,
        "negatives_per_query": round(n / len(pools), 3) if pools else 0.0,
        "pairs_short_of_num_negatives": short,
        "pairs_by_count": {str(k): v for k, v in sorted(per_pair.items())},
    }
    return table, stats


def _teacher_score(pool: QueryPool, index: int) -> float | None:
    """The teacher score of a chosen candidate, None where unknown (no rescore, or a corpus draw)."""
    if pool.ce_scores is None or index >= len(pool) or np.isnan(pool.ce_scores[index]):
        return None
    return float(pool.ce_scores[index])


def sample_negatives(
    candidates: pa.Table,
    positive_scores: pa.Table | None,
    qrels: pa.Table,
    queries: pa.Table,
    strategy: str = "simans",
    num_negatives: int = 7,
    seed: int = 42,
    corpus: pa.Table | None = None,
    clusters: pa.Table | None = None,
    scored_candidates: pa.Table | None = None,
    scored_positives: pa.Table | None = None,
    exclude: "Exclusions | None" = None,
    **params,
) -> tuple[pa.Table, dict]:
    """Build pools from ``candidates`` (positives removed) and sample ``num_negatives`` per (query, positive).

    ``corpus`` is needed by the strategies that draw from the whole corpus (``NEEDS``); ``clusters``
    fills ``cluster_id``; ``exclude`` holds documents never to be negatives (see :func:`likely_false_negatives`).
    """
    for table in NEEDS.get(strategy, ()):
        if {"corpus": corpus, "clusters": clusters}[table] is None:
            raise StageError(f"strategy {strategy!r} needs the {table} table; pass {table}=")
    pools = build_pools(candidates, positive_scores, qrels, queries, corpus, clusters,
                        exclude.own if exclude else None, exclude.everywhere if exclude else frozenset())
    if scored_candidates is not None:  # teacher scores from the rescore stage
        attach_teacher_scores(pools, scored_candidates, scored_positives)
    return sample_pools(pools, strategy, num_negatives, seed, **params)


@dataclass
class Exclusions:
    """Documents kept out of negatives: ``own[query_id]`` for one query, ``everywhere`` for every query."""

    own: dict[str, set[str]] = field(default_factory=dict)
    everywhere: frozenset[str] = frozenset()
    reasons: dict[str, str] = field(default_factory=dict)  # doc_id of ``everywhere`` → reason; (q, d) below
    pair_reasons: dict[tuple[str, str], str] = field(default_factory=dict)

    def reason(self, query_id: str, doc_id: str) -> str | None:
        """Why ``doc_id`` is kept out of ``query_id``'s negatives, or None."""
        return self.pair_reasons.get((query_id, doc_id)) or self.reasons.get(doc_id)

    def count(self, candidates: pa.Table) -> dict[str, int]:
        """How many (query, candidate) rows of ``candidates`` are kept out, by reason."""
        counts = {r: 0 for r in EXCLUSION_REASONS}
        if not self.own and not self.everywhere:
            return counts
        for q, d in zip(candidates.column("query_id").to_pylist(), candidates.column("doc_id").to_pylist()):
            why = self.reason(q, d)
            if why is not None:
                counts[why] += 1
        return counts


EXCLUSION_REASONS = ("duplicate_of_own_positive", "duplicate_of_other_positive", "above_max_fn_prob")


def likely_false_negatives(
    qrels: pa.Table,
    duplicates: pa.Table | None = None,
    fn_scores: pa.Table | None = None,
    max_fn_prob: float | None = None,
) -> Exclusions:
    """The documents to keep out of each query's negatives (labelled positives aside).

    ``duplicates`` (negmine.duplicates): a document whose text duplicates a labelled positive, of this
    query (a false negative by construction) or of another query (in a training batch it would be a
    negative of the very text that is that query's positive). ``fn_scores`` with ``max_fn_prob``:
    candidates whose P(false negative) (negmine.fn_model) is above the cap.
    """
    positives: dict[str, set[str]] = {}
    for q, d, r in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        if r > 0:
            positives.setdefault(q, set()).add(d)
    out = Exclusions()
    if duplicates is not None and duplicates.num_rows:
        dup_of: dict[str, set[str]] = {}
        for d, p in zip(duplicates.column("doc_id").to_pylist(), duplicates.column("dup_of").to_pylist()):
            dup_of.setdefault(d, set()).add(p)
        out.everywhere = frozenset(dup_of)
        out.reasons = {d: "duplicate_of_other_positive" for d in dup_of}
        query_of: dict[str, set[str]] = {}
        for q, pos in positives.items():
            for p in pos:
                query_of.setdefault(p, set()).add(q)
        for d, of in dup_of.items():
            for q in {q for p in of for q in query_of.get(p, ())}:
                out.pair_reasons[(q, d)] = "duplicate_of_own_positive"
    if fn_scores is not None and max_fn_prob is not None:
        for q, d, p in zip(*(fn_scores.column(c).to_pylist() for c in ("query_id", "doc_id", "fn_prob"))):
            if p > max_fn_prob and out.reason(q, d) is None:
                out.own.setdefault(q, set()).add(d)
                out.pair_reasons[(q, d)] = "above_max_fn_prob"
    return out
