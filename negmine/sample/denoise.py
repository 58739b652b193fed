"""Denoised hard negatives — RocketQA (Qu et al., NAACL 2021), "denoised hard negatives".

A teacher (a cross-encoder, see ``negmine rescore``) judges the retriever's top candidates. Walking
the candidates of ranks 1 … ``top`` in rank order (labelled positives already removed), candidate i
is kept as a negative only if

    ce_prob_i < negative_below          (RocketQA: 0.1)

until ``num_negatives`` are kept. Candidates with

    ce_prob_i > positive_above          (RocketQA: 0.9)

are *likely false negatives*: never chosen, counted in the stage stats, and written as
pseudo-positives (``pseudo_positives_denoise.parquet``) when ``pseudo_positives=True``.
If fewer than ``num_negatives`` pass, the rest is drawn uniformly without replacement from the
candidates ranked beyond ``top`` (likely false negatives there excluded too).

Thresholds apply to ``ce_prob`` (σ of a cross-encoder logit). With a bi-encoder teacher ``ce_prob``
is (cos + 1) / 2, not a probability: pick thresholds on that scale (e.g. 0.6 / 0.9) — with the
defaults almost no top candidate passes and the negatives become the random backfill.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from negmine.errors import StageError
from negmine.sample.pool import QueryPool
from negmine.schemas import PSEUDO_POSITIVES


def denoise_negatives(
    pool: QueryPool,
    pos_index: int,
    num_negatives: int,
    rng: np.random.Generator,
    top: int = 50,
    negative_below: float = 0.1,
    positive_above: float = 0.9,
    pseudo_positives: bool = False,
) -> np.ndarray:
    """Indices: top-``top`` candidates with ce_prob < ``negative_below`` in rank order, then a random backfill
    from ranks > ``top``. ``pseudo_positives`` is read by the sample stage (it writes the pseudo-positive table)."""
    if not 0.0 <= negative_below <= positive_above <= 1.0:
        raise StageError(f"denoise needs 0 <= negative_below <= positive_above <= 1, got {negative_below} and {positive_above}")
    if len(pool) == 0:
        return np.arange(0)
    if pool.ce_probs is None:
        raise StageError("strategy 'denoise' needs teacher scores; run `negmine rescore --teacher ...` on this source first")
    if np.isnan(pool.ce_probs).any():
        raise StageError(f"query {pool.query_id!r}: some candidates have no teacher score; rerun `negmine rescore` on this source")
    in_top = pool.ranks <= top
    kept = np.flatnonzero(in_top & (pool.ce_probs < negative_below))[:num_negatives]
    missing = num_negatives - len(kept)
    if missing <= 0:
        return kept
    beyond = np.flatnonzero(~in_top & (pool.ce_probs <= positive_above))
    backfill = rng.choice(beyond, size=min(missing, len(beyond)), replace=False) if len(beyond) else beyond
    return np.concatenate([kept, backfill]).astype(np.int64)


def likely_false_negatives(scored_candidates: pa.Table, qrels: pa.Table, top: int = 50, positive_above: float = 0.9) -> pa.Table:
    """Unlabelled candidates of rank <= ``top`` whose ce_prob > ``positive_above``: the pseudo-positives table.

    Rows are sorted by (query_id, source_rank) and each (query, doc) appears once (its best rank).
    """
    labelled = {(q, d) for q, d, r in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))) if r > 0}
    best: dict[tuple[str, str], tuple[int, float]] = {}
    for q, d, rank, prob in zip(*(scored_candidates.column(c).to_pylist() for c in ("query_id", "doc_id", "rank", "ce_prob"))):
        if rank <= top and prob > positive_above and (q, d) not in labelled:
            if (q, d) not in best or rank < best[(q, d)][0]:
                best[(q, d)] = (rank, prob)
    rows = sorted(best.items(), key=lambda kv: (kv[0][0], kv[1][0], kv[0][1]))
    return pa.table(
        {
            "query_id": [q for (q, _), _ in rows],
            "doc_id": [d for (_, d), _ in rows],
            "source_rank": pa.array([r for _, (r, _) in rows], pa.int32()),
            "ce_prob": pa.array([p for _, (_, p) in rows], pa.float32()),
        },
        schema=PSEUDO_POSITIVES,
    )
