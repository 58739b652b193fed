"""Positive-aware hard negatives (NV-Retriever; Moreira et al., 2024, arXiv:2407.15831).

Candidates are taken in rank order, keeping only those scored safely below the positive
(s_n = s(q, d_n), s⁺ = s(q, d⁺) of the pair's positive):

    TopK-PercPos  (``max_relative``, paper default 0.95):  s_n < max_relative · s⁺
    TopK-MarginPos (``margin``):                           s_n < s⁺ − margin
    TopK-Abs      (``max_score``):                          s_n < max_score

Every threshold that is given (not None) applies: a candidate must pass all of them, the strictest
wins. The default is the paper's best setting, TopK-PercPos at 95%; to use only ``margin`` or only
``max_score`` pass ``max_relative=None`` (``--param max_relative=null``). The first
``num_negatives`` survivors are the negatives; fewer when the pool has fewer (counted in the stats).
TopK-PercPos assumes s⁺ > 0 (cosine scores of a positive); with s⁺ ≤ 0 it keeps only candidates
scored below that product, as the formula says.
"""

from __future__ import annotations

import numpy as np

from negmine.errors import StageError
from negmine.sample.pool import QueryPool


def positive_aware_mask(scores: np.ndarray, positive_score: float | None, max_relative: float | None = 0.95, margin: float | None = None, max_score: float | None = None) -> np.ndarray:
    """Which ``scores`` pass every given threshold."""
    keep = np.ones(len(scores), dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if positive_score is None and (max_relative is not None or margin is not None):
        raise StageError("positive-aware needs s(q, d+) for max_relative or margin; score the positives or use max_score")
    if max_relative is not None:
        keep &= scores < max_relative * positive_score
    if margin is not None:
        keep &= scores < positive_score - margin
    if max_score is not None:
        keep &= scores < max_score
    return keep


def positive_aware_negatives(
    pool: QueryPool,
    pos_index: int,
    num_negatives: int,
    rng: np.random.Generator,
    max_relative: float | None = 0.95,
    margin: float | None = None,
    max_score: float | None = None,
) -> np.ndarray:
    """Indices of the best-ranked candidates that pass every given threshold against the pair's positive."""
    _, s_pos = pool.positives[pos_index]
    if s_pos is None and (max_relative is not None or margin is not None):
        raise StageError(f"query {pool.query_id!r}: no retriever score for positive {pool.positives[pos_index][0]!r}; positive-aware needs s(q, d+)")
    keep = positive_aware_mask(pool.scores, s_pos, max_relative, margin, max_score)
    return np.flatnonzero(keep)[:num_negatives]
