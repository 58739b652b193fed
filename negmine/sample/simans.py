"""SimANS — Simple Ambiguous Negatives Sampling (Zhou et al., EMNLP 2022).

Negatives are drawn from the candidate pool with probability

    gaussian (paper):  p_i ∝ exp(−a · (s_i − s⁺ − b)²)
    laplace:           p_i ∝ exp(−a · |s_i − s⁺ − b|)

where s_i = s(q, d_i) is the retriever score of candidate i and s⁺ = s(q, d⁺) that of the positive.
Sign convention: the kernel peaks at s_i = s⁺ + b. With b = 0 the likeliest negatives score as high
as the positive (the "ambiguous" zone); b < 0 moves the peak below the positive (safer from false
negatives), b > 0 above it. Larger ``a`` narrows the peak. ``a`` is on the scale of the scores:
cosine scores of a normalised bi-encoder lie in [−1, 1] with gaps of ~0.1, where a = 0.5 is close
to uniform over the pool; values of 10–100 are more selective there.

``positive_score`` chooses s⁺ when a query has several positives: ``pair`` (each (query, positive)
pair uses its own positive's score), ``random`` (a positive's score drawn at random for each pair), ``mean`` or
``max`` over the query's positives.

``score`` chooses whose scores s are: ``retriever`` (default; the candidates' retrieval scores) or
``ce`` (the teacher's raw ``ce_score`` from ``negmine rescore``, for candidates and positives alike;
the sample stage loads it when the run has ``scored_candidates_<source>``). ``a`` and ``b`` are on
the scale of that score (a cross-encoder logit spans ~±10, a bi-encoder teacher's cosine [−1, 1]).
"""

from __future__ import annotations

import numpy as np

from negmine.errors import StageError
from negmine.sample.pool import QueryPool

KERNELS = ("gaussian", "laplace")
POSITIVE_SCORES = ("pair", "random", "mean", "max")
SCORES = ("retriever", "ce")


def simans_weights(scores: np.ndarray, positive_score: float, a: float = 0.5, b: float = 0.0, kernel: str = "gaussian") -> np.ndarray:
    """Sampling probabilities over ``scores`` (they sum to 1)."""
    if kernel not in KERNELS:
        raise StageError(f"unknown SimANS kernel {kernel!r}; choose from {sorted(KERNELS)}")
    gap = np.asarray(scores, dtype=np.float64) - positive_score - b
    log_w = -a * (gap**2 if kernel == "gaussian" else np.abs(gap))
    w = np.exp(log_w - log_w.max())
    return w / w.sum()


def resolve_positive_score(pool: QueryPool, pos_index: int, mode: str, rng: np.random.Generator, score: str = "retriever") -> float:
    if mode not in POSITIVE_SCORES:
        raise StageError(f"unknown --positive-score {mode!r}; choose from {sorted(POSITIVE_SCORES)}")
    scores = [s for _, s in pool.positives] if score == "retriever" else list(pool.positive_ce or [None] * len(pool.positives))
    if any(s is None for s in scores):
        missing = [p for (p, _), s in zip(pool.positives, scores) if s is None]
        raise StageError(f"query {pool.query_id!r}: no {score} score for positive(s) {missing}; SimANS needs s(q, d+)")
    if mode == "pair":
        return float(scores[pos_index])
    if mode == "random":
        return float(scores[int(rng.integers(len(scores)))])
    return float(np.mean(scores) if mode == "mean" else np.max(scores))


def simans_negatives(
    pool: QueryPool,
    pos_index: int,
    num_negatives: int,
    rng: np.random.Generator,
    a: float = 0.5,
    b: float = 0.0,
    kernel: str = "gaussian",
    positive_score: str = "pair",
    score: str = "retriever",
) -> np.ndarray:
    """``num_negatives`` indices drawn without replacement with the SimANS probabilities, in draw order."""
    if score not in SCORES:
        raise StageError(f"unknown SimANS score {score!r}; choose from {sorted(SCORES)}")
    if len(pool) == 0:
        return np.arange(0)
    if score == "ce" and (pool.ce_scores is None or np.isnan(pool.ce_scores).any()):
        raise StageError(f"query {pool.query_id!r}: SimANS score='ce' needs teacher scores of every candidate; run `negmine rescore` on this source first")
    s_pos = resolve_positive_score(pool, pos_index, positive_score, rng, score)
    p = simans_weights(pool.scores if score == "retriever" else pool.ce_scores, s_pos, a, b, kernel)
    size = min(num_negatives, int(np.count_nonzero(p)))
    return rng.choice(len(pool), size=size, replace=False, p=p)
