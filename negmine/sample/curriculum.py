"""Curriculum negatives: bands of the candidate ranking, from easy to hard (after CL-DRD).

CL-DRD (Zeng, Zamani & Vinay, "Curriculum Learning for Dense Retrieval Distillation", SIGIR 2022)
trains in iterations of increasing difficulty: early iterations ask the student only to separate
coarse groups of the teacher's ranking, later ones the fine order among the top documents. Offline we
keep the data side of that schedule: the pool (in rank order) is split into ``n_stages`` contiguous
bands of equal size (±1), band 1 the lowest-ranked (easiest) candidates, band ``n_stages`` the top
ones (hardest); each band gives ⌊n/S⌋ or ⌈n/S⌉ negatives drawn uniformly within it
(n = min(num_negatives, |pool|), S = n_stages; the extra ones go to the hardest bands). Every negative
is written with its ``stage`` (1 = easiest); a trainer runs stage t on negatives with stage ≤ t, or on
stage t alone. Negatives are ordered from easy to hard. ``n_stages`` defaults to 3, CL-DRD's number
of curriculum iterations.
"""

from __future__ import annotations

import numpy as np

from negmine.errors import StageError
from negmine.sample.pool import QueryPool


def curriculum_negatives(
    pool: QueryPool, pos_index: int, num_negatives: int, rng: np.random.Generator, n_stages: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, stages): per band, its share of ``num_negatives`` drawn uniformly; easiest band first."""
    if n_stages < 1:
        raise StageError(f"curriculum: n_stages must be at least 1, got {n_stages}")
    n = min(num_negatives, len(pool))
    # np.array_split puts the larger bands first (= top ranks); quotas likewise, so quota ≤ band size
    bands = np.array_split(np.arange(len(pool)), n_stages)
    quotas = [len(q) for q in np.array_split(np.arange(n), n_stages)]
    indices, stages = [], []
    for hardness in range(n_stages - 1, -1, -1):  # band n_stages−1 (lowest ranks) is stage 1
        band, quota = bands[hardness], quotas[hardness]
        if quota:
            indices.extend(rng.choice(band, size=quota, replace=False).tolist())
            stages.extend([n_stages - hardness] * quota)
    return np.asarray(indices, dtype=np.int64), np.asarray(stages, dtype=np.int64)
