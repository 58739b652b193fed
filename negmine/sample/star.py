"""STAR negatives: static hard negatives mixed with random corpus negatives.

STAR (Zhan et al., "Optimizing Dense Retrieval Model Training with Hard Negatives", SIGIR 2021)
trains on static hard negatives retrieved once by a warm-up model (sampled from its top-200) and adds
random negatives, which keep training stable: the hard-negative term alone lets a few difficult
queries dominate. Offline, per (query, positive) pair:

    n_hard   = min(round(hard_ratio · num_negatives), |{candidates with source rank ≤ top_k}|)
    n_random = num_negatives − n_hard

hard negatives are drawn uniformly without replacement from the candidates ranked ≤ ``top_k``
(default 200, the paper's), random negatives uniformly from the corpus (labelled positives and the
chosen hard negatives excluded; see :mod:`negmine.sample.uniform`). Hard negatives come first.
``hard_ratio`` defaults to 0.5, equal shares of hard and random negatives: STAR adds a random-negative
term to the hard-negative one rather than replacing either, and in-batch random negatives roughly match
the hard ones in number at the paper's batch sizes. This is our reading of the paper, not a number it
gives; tune it with ``--param hard_ratio=``.
"""

from __future__ import annotations

import numpy as np

from negmine.errors import StageError
from negmine.sample.pool import QueryPool
from negmine.sample.uniform import draw_from_corpus


def star_negatives(
    pool: QueryPool,
    pos_index: int,
    num_negatives: int,
    rng: np.random.Generator,
    hard_ratio: float = 0.5,
    top_k: int = 200,
) -> np.ndarray:
    """Hard candidate negatives (ranked ≤ ``top_k``) then random corpus negatives; indices as in :meth:`QueryPool.neg_id`."""
    if not 0.0 <= hard_ratio <= 1.0:
        raise StageError(f"star: hard_ratio must lie in [0, 1], got {hard_ratio}")
    hard_pool = np.flatnonzero(pool.ranks <= top_k)
    n_hard = min(int(round(hard_ratio * num_negatives)), len(hard_pool))
    hard = rng.choice(hard_pool, size=n_hard, replace=False) if n_hard else np.arange(0)
    chosen_docs = {pool.doc_ids[i] for i in hard}
    random = draw_from_corpus(pool, num_negatives - n_hard, rng, exclude=chosen_docs)
    return np.concatenate([np.asarray(hard, dtype=np.int64), np.asarray(random, dtype=np.int64)])
