"""SimANS — Simple Ambiguous Negatives Sampling (Zhou et al., EMNLP 2022).

Negatives are drawn from the candidate pool with probability

    gaussian (paper):  p_i ∝ exp(−a · (x_i − x⁺ − b)²)
    laplace:           p_i ∝ exp(−a · |x_i − x⁺ − b|)

where x_i is the score of candidate i and x⁺ that of the positive, on the scale ``scale`` chooses:

    query-z (default):  x = (s − μ_q) / σ_q
    raw:                x = s

s_i = s(q, d_i) and s⁺ = s(q, d⁺) are the scores themselves; μ_q and σ_q are the mean and the
(population) standard deviation of the query's candidate scores, over the pool the strategy sees
(labelled positives removed). The positive is put on the same scale with the same μ_q and σ_q.

Sign convention: the kernel peaks at x_i = x⁺ + b. With b = 0 the likeliest negatives score as high
as the positive (the "ambiguous" zone); b < 0 moves the peak below the positive (safer from false
negatives), b > 0 above it. Larger ``a`` narrows the peak: the gaussian kernel is a normal density
with standard deviation 1/√(2a) in units of x.

Why query-z and why a = 1, b = −0.5. The paper's a = 0.5 was set for its models' unnormalised
dot-product scores. A normalised bi-encoder's cosine scores lie in [−1, 1] and a query's top-100
spans a few tenths at most, so on raw cosines a = 0.5 makes the kernel nearly flat
(exp(−0.5 · 0.3²) ≈ 0.96) and SimANS no better than a uniform draw from the pool. Standardising per
query puts a and b in units of the query's own score spread, whatever the retriever: a = 1 gives a
kernel of standard deviation 1/√2 ≈ 0.71 σ_q (erf(1) ≈ 84% of its mass within ±1 σ_q of the peak),
narrow enough to select, wide enough to keep several candidates in play; b = −0.5 puts the peak
half a σ_q below the positive, so most draws score a little below it — ambiguous negatives, neither
the top-k nor the whole pool. Where the positive scores far above its whole pool (often so when it
ranks first), the candidates nearest to it are the top-ranked ones, and SimANS draws mostly from
those, as the formula says. ``scale="raw"`` gives the paper's unnormalised form, for scores whose
scale ``a`` and ``b`` were tuned on.

A pool with σ_q = 0 (one candidate, or all scores equal) has no spread to standardise by: every
kernel is flat there, so it is sampled uniformly, as on the raw scale.

``positive_score`` chooses s⁺ when a query has several positives: ``pair`` (each (query, positive)
pair uses its own positive's score), ``random`` (a positive's score drawn at random for each pair), ``mean`` or
``max`` over the query's positives.

``score`` chooses whose scores s are: ``retriever`` (default; the candidates' retrieval scores) or
``ce`` (the teacher's raw ``ce_score`` from ``negmine rescore``, for candidates and positives alike;
the sample stage loads it when the run has ``scored_candidates_<source>``). With ``scale="raw"``,
``a`` and ``b`` are on the scale of that score (a cross-encoder logit spans ~±10, a bi-encoder
teacher's cosine [−1, 1]); with ``query-z`` they are in units of its per-query spread either way.
"""

from __future__ import annotations

import numpy as np

from negmine.errors import StageError
from negmine.sample.pool import QueryPool

KERNELS = ("gaussian", "laplace")
POSITIVE_SCORES = ("pair", "random", "mean", "max")
SCORES = ("retriever", "ce")
SCALES = ("query-z", "raw")


def _check(kernel: str, scale: str) -> None:
    if kernel not in KERNELS:
        raise StageError(f"unknown SimANS kernel {kernel!r}; choose from {sorted(KERNELS)}")
    if scale not in SCALES:
        raise StageError(f"unknown SimANS scale {scale!r}; choose from {sorted(SCALES)}")


def simans_weights(
    scores: np.ndarray, positive_score: float, a: float = 1.0, b: float = -0.5, kernel: str = "gaussian", scale: str = "query-z"
) -> np.ndarray:
    """Sampling probabilities over ``scores``, the query's whole pool (they sum to 1)."""
    _check(kernel, scale)
    x = np.asarray(scores, dtype=np.float64)
    x_pos = float(positive_score)
    if scale == "query-z":
        mu, sigma = x.mean(), x.std()
        if not sigma > 0:  # one candidate or all tied: nothing to standardise by, every kernel is flat
            return np.full(len(x), 1.0 / len(x))
        x, x_pos = (x - mu) / sigma, (x_pos - mu) / sigma
    gap = x - x_pos - b
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
    a: float = 1.0,
    b: float = -0.5,
    kernel: str = "gaussian",
    positive_score: str = "pair",
    score: str = "retriever",
    scale: str = "query-z",
) -> np.ndarray:
    """``num_negatives`` indices drawn without replacement with the SimANS probabilities, in draw order."""
    if score not in SCORES:
        raise StageError(f"unknown SimANS score {score!r}; choose from {sorted(SCORES)}")
    _check(kernel, scale)
    if len(pool) == 0:
        return np.arange(0)
    if score == "ce" and (pool.ce_scores is None or np.isnan(pool.ce_scores).any()):
        raise StageError(f"query {pool.query_id!r}: SimANS score='ce' needs teacher scores of every candidate; run `negmine rescore` on this source first")
    s_pos = resolve_positive_score(pool, pos_index, positive_score, rng, score)
    p = simans_weights(pool.scores if score == "retriever" else pool.ce_scores, s_pos, a, b, kernel, scale)
    size = min(num_negatives, int(np.count_nonzero(p)))
    return rng.choice(len(pool), size=size, replace=False, p=p)
