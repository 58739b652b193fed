"""Rank-range negatives: uniform sample from candidates ranked within [range_min, range_max].

Skipping the very top ranks, where unlabelled positives concentrate (Qu et al., RocketQA, NAACL 2021;
Moreira et al., NV-Retriever, 2024), is the simplest guard against false negatives; this is
sentence-transformers' ``mine_hard_negatives(range_min=..., range_max=...)`` in spirit.
Ranks are the source ranks (1-based) before positives were removed.
"""

from __future__ import annotations

import numpy as np

from negmine.errors import StageError
from negmine.sample.pool import QueryPool


def range_negatives(
    pool: QueryPool,
    pos_index: int,
    num_negatives: int,
    rng: np.random.Generator,
    range_min: int = 10,
    range_max: int = 50,
) -> np.ndarray:
    """``num_negatives`` indices drawn uniformly without replacement from ranks range_min..range_max."""
    if range_min < 1 or range_max < range_min:
        raise StageError(f"need 1 <= range_min <= range_max, got range_min={range_min}, range_max={range_max}")
    window = np.flatnonzero((pool.ranks >= range_min) & (pool.ranks <= range_max))
    if len(window) <= num_negatives:
        return window
    return np.sort(rng.choice(window, size=num_negatives, replace=False))
