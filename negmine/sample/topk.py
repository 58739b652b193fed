"""Top-k hard negatives: the k best-ranked candidates that are not labelled positives.

The static hard negatives of DPR (Karpukhin et al., EMNLP 2020) and of most BM25-mined datasets.
"""

from __future__ import annotations

import numpy as np

from negmine.sample.pool import QueryPool


def topk_negatives(pool: QueryPool, pos_index: int, num_negatives: int, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``pool`` of its first ``num_negatives`` candidates."""
    return np.arange(min(num_negatives, len(pool)))
