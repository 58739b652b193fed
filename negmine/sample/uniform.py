"""Random negatives: documents drawn uniformly from the whole corpus, labelled positives excluded.

The "random" baseline of DPR (Karpukhin et al., EMNLP 2020, §5.2: "any random passage from the
corpus"): p(d) = 1 / (|C| − |D⁺_q|) for every corpus document d ∉ D⁺_q, drawn without replacement.
It reads the corpus ids, not the candidate pool; a drawn document that is also a retrieved candidate
keeps its candidate index (so its rank and score are reported), any other gets a corpus index and
null ``retriever_score`` / ``source_rank`` in the negatives table.
"""

from __future__ import annotations

import numpy as np

from negmine.errors import StageError
from negmine.sample.pool import QueryPool

# Rejection sampling tries this many draws per wanted document before it falls back to a full scan
# of a permutation (only reached when the corpus is about as small as the number wanted).
_TRIES_PER_DRAW = 50


def draw_from_corpus(pool: QueryPool, size: int, rng: np.random.Generator, exclude: set[str] = frozenset()) -> list[int]:
    """Up to ``size`` pool indices of distinct corpus documents drawn uniformly, skipping positives, the
    pool's excluded documents (likely false negatives) and ``exclude``.

    Fewer than ``size`` only when the corpus has no more eligible documents.
    """
    if pool.corpus_ids is None:
        raise StageError(f"query {pool.query_id!r}: this strategy draws from the corpus; build the pools with corpus=")
    ids = pool.corpus_ids
    banned = {p for p, _ in pool.positives} | set(pool.excluded) | set(exclude)
    banned_everywhere = pool.excluded_everywhere
    at = {d: i for i, d in enumerate(pool.doc_ids)}
    chosen: list[int] = []
    taken: set[str] = set()

    def take(row: int) -> None:
        doc = ids[row]
        if doc not in banned and doc not in banned_everywhere and doc not in taken:
            taken.add(doc)
            chosen.append(at.get(doc, len(pool) + row))

    if size <= 0 or not ids:
        return chosen
    for _ in range(_TRIES_PER_DRAW * size):
        take(int(rng.integers(len(ids))))
        if len(chosen) == size:
            return chosen
    for row in rng.permutation(len(ids)):
        take(int(row))
        if len(chosen) == size:
            break
    return chosen


def random_negatives(pool: QueryPool, pos_index: int, num_negatives: int, rng: np.random.Generator) -> np.ndarray:
    """``num_negatives`` uniform corpus negatives (indices as in :meth:`QueryPool.neg_id`), in draw order."""
    return np.asarray(draw_from_corpus(pool, num_negatives, rng), dtype=np.int64)
