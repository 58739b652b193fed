"""TAS-Balanced negatives: margin-balanced sampling (Hofstätter et al., SIGIR 2021).

TAS-Balanced ("Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware
Sampling") balances the teacher margins of the pairs it trains on. Per query, each candidate n gets
the teacher margin

    M(q, n) = s_T(q, d⁺) − s_T(q, n)

and the candidates are binned into ``n_bins`` (paper: 10) equal-width bins over
[min M, max M] of the query's pool. Each negative is drawn in two steps: a non-empty bin uniformly
at random, then a candidate uniformly within it (without replacement), so wide margins do not crowd
out narrow ones. The teacher s_T is the cross-encoder score (``ce_score``) when the pool has teacher
scores for every candidate and the pair's positive (``negmine rescore``), otherwise the retriever.

The topic-aware half of TAS is batch composition: every negative carries its query's ``cluster_id``
(``negmine cluster``), so a trainer can build each batch from one cluster.
"""

from __future__ import annotations

import numpy as np

from negmine.errors import StageError
from negmine.sample.pool import QueryPool


def margin_bins(margins: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """The bin (0 … n_bins − 1) of each margin, for ``n_bins`` equal-width bins over [min, max]."""
    margins = np.asarray(margins, dtype=np.float64)
    if len(margins) == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = margins.min(), margins.max()
    if high == low:
        return np.zeros(len(margins), dtype=np.int64)
    return np.minimum(((margins - low) / (high - low) * n_bins).astype(np.int64), n_bins - 1)


def teacher_scores(pool: QueryPool, pos_index: int) -> tuple[np.ndarray, float]:
    """(candidate scores, positive score) of the teacher: ce scores when complete, else the retriever's."""
    ce = getattr(pool, "ce_scores", None)
    pos_ce = getattr(pool, "positive_ce", None)
    if ce is not None and pos_ce is not None and pos_ce[pos_index] is not None and not np.isnan(ce).any():
        return np.asarray(ce, dtype=np.float64), float(pos_ce[pos_index])
    pos_id, s_pos = pool.positives[pos_index]
    if s_pos is None:
        raise StageError(f"query {pool.query_id!r}: no retriever score for positive {pos_id!r}; tas-balanced needs s(q, d+)")
    return np.asarray(pool.scores, dtype=np.float64), float(s_pos)


def tas_balanced_negatives(pool: QueryPool, pos_index: int, num_negatives: int, rng: np.random.Generator, n_bins: int = 10) -> np.ndarray:
    """``num_negatives`` indices: a uniform non-empty margin bin, then a uniform candidate in it; in draw order."""
    if n_bins < 1:
        raise StageError(f"tas-balanced: n_bins must be at least 1, got {n_bins}")
    if len(pool) == 0:
        return np.arange(0)
    scores, s_pos = teacher_scores(pool, pos_index)
    bins = margin_bins(s_pos - scores, n_bins)
    members = [list(np.flatnonzero(bins == b)) for b in range(n_bins)]
    chosen = []
    for _ in range(min(num_negatives, len(pool))):
        open_bins = [b for b in range(n_bins) if members[b]]
        b = open_bins[int(rng.integers(len(open_bins)))]
        chosen.append(members[b].pop(int(rng.integers(len(members[b])))))
    return np.asarray(chosen, dtype=np.int64)
