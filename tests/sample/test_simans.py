"""SimANS on the query-z scale (the default): the formula, its guards, and a cosine-like pool."""

import math

import numpy as np
import pytest

from negmine.errors import StageError
from negmine.sample import strategy_params
from negmine.sample.pool import QueryPool
from negmine.sample.simans import simans_negatives, simans_weights

# A cosine-like pool: 100 candidates scored 0.75 down to 0.45 (ranks 1..100), the positive at 0.70.
SCORES = np.linspace(0.75, 0.45, 100)
S_POS = 0.70
MU, SIGMA = SCORES.mean(), SCORES.std()


def _pool(scores=SCORES, s_pos=S_POS, ce=None, positive_ce=None):
    n = len(scores)
    return QueryPool("q", [f"d{i}" for i in range(n)], np.arange(1, n + 1, dtype=np.int32), np.asarray(scores, np.float32), [("p", s_pos)],
                     ce_scores=None if ce is None else np.asarray(ce, np.float32), positive_ce=positive_ce)


def test_defaults_are_query_z_a_1_b_minus_half():
    assert strategy_params("simans") == {"a": 1.0, "b": -0.5, "kernel": "gaussian", "positive_score": "pair", "score": "retriever", "scale": "query-z"}


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
def test_query_z_weights_follow_the_formula(kernel):
    scores = np.array([0.9, 0.7, 0.5, 0.2])
    s_pos, a, b = 0.8, 1.0, -0.5
    mu = (0.9 + 0.7 + 0.5 + 0.2) / 4
    sigma = math.sqrt(sum((s - mu) ** 2 for s in scores) / 4)
    gaps = [(s - mu) / sigma - (s_pos - mu) / sigma - b for s in scores]
    raw = [math.exp(-a * (g**2 if kernel == "gaussian" else abs(g))) for g in gaps]
    np.testing.assert_allclose(simans_weights(scores, s_pos, a, b, kernel), np.array(raw) / sum(raw), rtol=1e-12)
    np.testing.assert_allclose(simans_weights(scores, s_pos, kernel=kernel), np.array(raw) / sum(raw), rtol=1e-12)  # the defaults


@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
def test_query_z_weights_ignore_the_scores_units(kernel):
    # standardising per query makes a and b mean the same for a cosine and for a logit 40 times as wide
    np.testing.assert_allclose(simans_weights(40 * SCORES - 7, 40 * S_POS - 7, kernel=kernel), simans_weights(SCORES, S_POS, kernel=kernel), rtol=1e-9)
    assert not np.allclose(simans_weights(40 * SCORES - 7, 40 * S_POS - 7, kernel=kernel, scale="raw"), simans_weights(SCORES, S_POS, kernel=kernel, scale="raw"))


def test_on_a_cosine_like_pool_the_default_peaks_just_below_the_positive():
    a, b = 1.0, -0.5
    p = simans_weights(SCORES, S_POS)
    peak = S_POS + b * SIGMA  # the kernel's mode, x = x+ + b, in score units
    assert p.argmax() == np.abs(SCORES - peak).argmin()
    assert SCORES[p.argmax()] < S_POS
    # the gaussian kernel is a normal density of std 1/√(2a) in z: erf(√a) of its mass lies within ±1 of the mode;
    # this pool spreads evenly over the whole window and only cuts tail beyond it, which can only add to the share
    window = np.abs(SCORES - peak) <= SIGMA
    assert p[window].sum() >= math.erf(math.sqrt(a)) - 0.01
    assert window.mean() < 0.6  # what a uniform draw puts there
    assert p[SCORES < S_POS].sum() > 0.8  # mostly below the positive


def test_the_old_raw_default_is_nearly_uniform_on_cosine_scores():
    p = simans_weights(SCORES, S_POS, a=0.5, b=0.0, scale="raw")
    # exp(−0.5 · gap²) with |gap| ≤ 0.25: the likeliest candidate is at most e^{0.5·0.25²} ≈ 1.03 times the least
    assert p.max() / p.min() <= math.exp(0.5 * 0.25**2) + 1e-12


def _sampled(pairs=300, **params):
    pool = _pool()
    chosen = np.concatenate([simans_negatives(pool, 0, 7, np.random.default_rng(seed), **params) for seed in range(pairs)])
    return pool.ranks[chosen], SCORES[chosen]


def test_sampled_negatives_concentrate_near_the_positive_not_uniformly():
    uniform_rank, uniform_gap = (1 + 100) / 2, np.abs(SCORES - S_POS).mean()
    ranks, scores = _sampled()
    assert abs(ranks.mean() - uniform_rank) > 10  # the old default's mean rank sits on the uniform one
    assert np.abs(scores - S_POS).mean() < 0.75 * uniform_gap
    assert (scores < S_POS).mean() > 0.75
    old_ranks, old_scores = _sampled(a=0.5, b=0.0, scale="raw")
    assert abs(old_ranks.mean() - uniform_rank) < 3
    assert np.abs(old_scores - S_POS).mean() == pytest.approx(uniform_gap, rel=0.1)


@pytest.mark.parametrize("scores", [np.array([0.6]), np.array([0.6, 0.6, 0.6])])
@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
def test_a_pool_without_spread_is_sampled_uniformly(scores, kernel):
    np.testing.assert_array_equal(simans_weights(scores, 0.9, kernel=kernel), np.full(len(scores), 1 / len(scores)))
    np.testing.assert_allclose(simans_weights(scores, 0.9, kernel=kernel, scale="raw"), np.full(len(scores), 1 / len(scores)))
    assert sorted(simans_negatives(_pool(scores, 0.9), 0, 7, np.random.default_rng(0))) == list(range(len(scores)))


@pytest.mark.parametrize("scale", ["query-z", "raw"])
@pytest.mark.parametrize("score", ["retriever", "ce"])
@pytest.mark.parametrize("kernel", ["gaussian", "laplace"])
@pytest.mark.parametrize("positive_score", ["pair", "max"])
def test_draws_use_the_weights_of_the_chosen_score_kernel_and_scale(scale, score, kernel, positive_score):
    ce = -12 * SCORES[::-1] + 3  # a teacher that disagrees with the retriever, on a logit's scale
    pool = _pool(ce=ce, positive_ce=[2.0])
    pool.positives.append(("p2", 0.72))
    pool.positive_ce.append(-4.0)
    s, s_pos = (SCORES, 0.72 if positive_score == "max" else S_POS) if score == "retriever" else (ce, 2.0)
    p = simans_weights(s, s_pos, kernel=kernel, scale=scale)
    drawn = simans_negatives(pool, 0, 7, np.random.default_rng(3), kernel=kernel, positive_score=positive_score, score=score, scale=scale)
    np.testing.assert_array_equal(drawn, np.random.default_rng(3).choice(100, size=7, replace=False, p=p))


def test_unknown_scale_names_the_choices():
    with pytest.raises(StageError, match=r"^unknown SimANS scale 'z'; choose from \['query-z', 'raw'\]$"):
        simans_weights(SCORES, S_POS, scale="z")
    with pytest.raises(StageError, match=r"^unknown SimANS scale 'z'; choose from \['query-z', 'raw'\]$"):
        simans_negatives(_pool([], 0.5), 0, 7, np.random.default_rng(0), scale="z")  # even on an empty pool
