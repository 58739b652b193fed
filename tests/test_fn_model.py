"""P(false negative): signals written as their formulas, the PU model's c, and intervals that cover the truth."""

import math

import numpy as np
import pyarrow as pa
import pytest

from negmine.errors import StageError
from negmine.fn_model import Features, FnModel, build_features, fit_logistic, fit_model, rate_interval, score_candidates
from negmine.schemas import CANDIDATES, DUPLICATES, POSITIVE_SCORES, QRELS, SCORED_CANDIDATES, SCORED_POSITIVES


def _tables():
    # query a: positives pa1 (rank 1, 0.9), pa2 (rank 3, 0.7); candidates x (2, 0.8), y (4, 0.5)
    # query b: positive pb (not retrieved, 0.4); candidates z (1, 0.6), w (2, 0.2)
    cand = pa.table({"query_id": ["a"] * 4 + ["b"] * 2, "doc_id": ["pa1", "x", "pa2", "y", "z", "w"], "source": ["dense"] * 6,
                     "rank": [1, 2, 3, 4, 1, 2], "score": [0.9, 0.8, 0.7, 0.5, 0.6, 0.2]}, schema=CANDIDATES)
    pos = pa.table({"query_id": ["a", "a", "b"], "doc_id": ["pa1", "pa2", "pb"], "source": ["dense"] * 3, "rank": [1, 3, None],
                    "score": [0.9, 0.7, 0.4]}, schema=POSITIVE_SCORES)
    qrels = pa.table({"query_id": ["a", "a", "b"], "doc_id": ["pa1", "pa2", "pb"], "relevance": [1, 1, 1]}, schema=QRELS)
    return cand, pos, qrels


def test_signals_follow_their_formulas():
    cand, pos, qrels = _tables()
    f = build_features(cand, pos, qrels)
    assert f.names == ["retriever_z", "retriever_margin", "log_rank"]
    assert list(zip(f.query_ids, f.doc_ids)) == [("a", "x"), ("a", "y"), ("b", "z"), ("b", "w")]
    mu_a, sd_a = np.mean([0.9, 0.8, 0.7, 0.5]), np.std([0.9, 0.8, 0.7, 0.5])
    mu_b, sd_b = 0.4, 0.2
    expected = [
        [(0.8 - mu_a) / sd_a, (0.8 - 0.9) / sd_a, math.log(2)],
        [(0.5 - mu_a) / sd_a, (0.5 - 0.9) / sd_a, math.log(4)],
        [(0.6 - mu_b) / sd_b, (0.6 - 0.4) / sd_b, math.log(1)],
        [(0.2 - mu_b) / sd_b, (0.2 - 0.4) / sd_b, math.log(2)],
    ]
    np.testing.assert_allclose(f.candidates, expected, rtol=1e-5)
    # labelled positives of a query with two: each against the other positive
    np.testing.assert_allclose(f.positives, [[(0.9 - mu_a) / sd_a, (0.9 - 0.7) / sd_a, 0.0], [(0.7 - mu_a) / sd_a, (0.7 - 0.9) / sd_a, math.log(3)]], rtol=1e-5)
    assert f.positive_query_ids == ["a", "a"]


def test_teacher_agreement_and_duplicate_signals():
    cand, pos, qrels = _tables()
    scored = cand.append_column("ce_score", pa.array([5.0, 4.0, 3.0, 1.0, 2.0, 0.0], pa.float32())).append_column("ce_prob", pa.array([0.5] * 6, pa.float32()))
    scored_pos = pos.append_column("ce_score", pa.array([5.0, 3.0, 1.0], pa.float32())).append_column("ce_prob", pa.array([0.5] * 3, pa.float32()))
    other = pa.table({"query_id": ["a"], "doc_id": ["y"], "source": ["bm25"], "rank": [7], "score": [1.0]}, schema=CANDIDATES)
    dups = pa.table({"doc_id": ["x"], "dup_of": ["pa2"], "kind": ["near"], "similarity": [0.9]}, schema=DUPLICATES)
    f = build_features(cand, pos, qrels, scored.cast(SCORED_CANDIDATES), scored_pos.cast(SCORED_POSITIVES), other, None, dups)
    assert f.names[3:] == ["teacher_z", "teacher_margin", "other_log_rank"]
    t_mu, t_sd = np.mean([5, 4, 3, 1]), np.std([5, 4, 3, 1])
    np.testing.assert_allclose(f.candidates[1, 3:], [(1 - t_mu) / t_sd, (1 - 5) / t_sd, math.log(7)], rtol=1e-5)
    np.testing.assert_allclose(f.candidates[0, 5], math.log(8))  # not retrieved by the other: K_other + 1
    assert f.duplicate.tolist() == [True, False, False, False]
    model = FnModel("pu", f.names, np.zeros(6), np.ones(6), np.array([0, 0, 0, 0, 0, 0, -50.0]), np.eye(7) * 1e-6)
    assert score_candidates(f, model).column("fn_prob").to_pylist()[0] == 1.0  # duplicates: probability 1


def test_fit_logistic_reaches_the_penalised_optimum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (rng.random(400) < 1 / (1 + np.exp(-(x @ [1.5, -1.0, 0.0] + 0.3)))).astype(float)
    w, hess = fit_logistic(x, y, l2=1.0)
    xb = np.hstack([x, np.ones((400, 1))])
    grad = xb.T @ (1 / (1 + np.exp(-xb @ w)) - y) + np.array([1.0, 1.0, 1.0, 0.0]) * w
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    assert np.all(np.linalg.eigvalsh(hess) > 0)


def test_fit_logistic_survives_separable_data():
    x = np.concatenate([np.full((20, 1), 5.0), np.zeros((2000, 1))])
    y = np.concatenate([np.ones(20), np.zeros(2000)])
    w, _ = fit_logistic(x, y)
    assert np.all(np.isfinite(w)) and abs(w[-1]) < 50


def _pu_world(n_queries=400, labelled_share=0.5, seed=0):
    """Candidates of which some are positives (signal shifted by +2); a share of positives labelled."""
    rng = np.random.default_rng(seed)
    rows, pos_rows, qids, pqids, truth = [], [], [], [], []
    for q in range(n_queries):
        for _ in range(20):
            positive = rng.random() < 0.1
            x = rng.normal(2.0 if positive else 0.0)
            if positive and rng.random() < labelled_share:
                pos_rows.append([x])
                pqids.append(f"q{q}")
            else:
                rows.append([x])
                qids.append(f"q{q}")
                truth.append(positive)
    f = Features(["signal"], np.array(rows), qids, [f"d{i}" for i in range(len(rows))], np.ones(len(rows), np.int32),
                 np.zeros(len(rows), bool), np.array(pos_rows), pqids)
    return f, np.array(truth)


def test_pu_model_recovers_the_labelling_frequency_and_the_rate():
    f, truth = _pu_world()
    model = fit_model(f, "pu", seed=1)
    assert model.c == pytest.approx(0.5, abs=0.08)  # half the positives were labelled
    probs = model.predict(f.candidates)
    assert probs.mean() == pytest.approx(truth.mean(), abs=0.015)
    assert probs[truth].mean() > 3 * probs[~truth].mean()
    rate, low, high = rate_interval(f.query_ids, np.arange(len(truth)), f, model, n_boot=300, seed=2)
    assert low <= truth.mean() <= high and low < rate < high


def test_interval_covers_the_truth_in_most_worlds():
    covered = 0
    for seed in range(10):
        f, truth = _pu_world(n_queries=150, seed=seed)
        model = fit_model(f, "pu", seed=seed)
        top = np.argsort(-f.candidates[:, 0])[: len(truth) // 4]  # a "hard" strategy: the highest-scored quarter
        _, low, high = rate_interval([f.query_ids[i] for i in top], top, f, model, n_boot=300, seed=seed)
        covered += low <= truth[top].mean() <= high
    assert covered >= 7


def test_pu_model_needs_labelled_positives():
    f, _ = _pu_world(n_queries=5, labelled_share=0.0)
    with pytest.raises(StageError, match="needs labelled positives"):
        fit_model(f, "pu")


def test_supervised_model_on_audited_labels():
    f, truth = _pu_world(seed=3)
    labels = {(f.query_ids[i], f.doc_ids[i]): int(truth[i]) for i in range(0, len(truth), 3)}
    model = fit_model(f, "labels", labels)
    probs = model.predict(f.candidates)
    assert probs.mean() == pytest.approx(truth.mean(), abs=0.02)
    with pytest.raises(StageError, match="unknown false-negative model 'cross'; choose from \\['labels', 'pu'\\]"):
        fit_model(f, "cross")


def test_model_round_trips_through_json():
    import json

    f, _ = _pu_world(n_queries=100)
    model = fit_model(f, "pu")
    again = FnModel.from_dict(json.loads(model.to_json()))
    np.testing.assert_array_equal(again.predict(f.candidates), model.predict(f.candidates))
    np.testing.assert_array_equal(again.replicates, model.replicates)
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    np.testing.assert_array_equal(again.draws(f.candidates[:5], 10, rng()), model.draws(f.candidates[:5], 10, rng()))


def _logistic_world(seed, n_queries=160, per_query=40, beta=(1.5, -0.8), intercept=-5.0):
    """Candidates whose false-negative outcome is drawn from a known logistic model P(FN | x) = σ(β·x + β₀)."""
    rng = np.random.default_rng(seed)
    n = n_queries * per_query
    x = rng.normal(size=(n, len(beta)))
    truth = rng.random(n) < 1 / (1 + np.exp(-(x @ np.array(beta) + intercept)))
    qids = [f"q{i // per_query}" for i in range(n)]
    ranks = np.concatenate([np.argsort(np.argsort(-x[i * per_query:(i + 1) * per_query, 0])) + 1 for i in range(n_queries)]).astype(np.int32)
    f = Features(["a", "b"], x, qids, [f"d{i}" for i in range(n)], ranks, np.zeros(n, bool), np.zeros((0, 2)), [])
    return f, truth


def test_the_audited_model_interval_covers_the_true_rate_in_at_least_90_percent_of_worlds():
    covered = 0
    for seed in range(20):
        f, truth = _logistic_world(seed)
        audited = np.array([int(q[1:]) % 2 == 0 for q in f.query_ids])  # half the queries audited, the rate measured on the others
        labels = {(f.query_ids[i], f.doc_ids[i]): int(truth[i]) for i in np.flatnonzero(audited)}
        model = fit_model(f, "labels", labels, seed=seed)
        hard = np.flatnonzero(~audited & (f.ranks <= 5))  # a top-5 strategy
        _, low, high = rate_interval([f.query_ids[i] for i in hard], hard, f, model, n_boot=500, seed=seed)
        covered += low <= truth[hard].mean() <= high
    assert covered >= 18


def test_the_bootstrap_refits_resample_queries():
    f, truth = _logistic_world(0, n_queries=60)
    labels = {(q, d): int(t) for q, d, t in zip(f.query_ids, f.doc_ids, truth)}
    model = fit_model(f, "labels", labels, seed=3)
    assert model.replicates.shape == (100, 3)
    spread = model.replicates.std(axis=0)
    laplace = np.sqrt(np.diag(model.covariance))
    assert np.all(spread > 0.5 * laplace) and np.all(spread < 2.0 * laplace)  # the refits vary as much as the fit's own uncertainty says
    np.testing.assert_array_equal(fit_model(f, "labels", labels, seed=3).replicates, model.replicates)  # seeded


@pytest.mark.parametrize("method", ["pu", "labels"])
def test_duplicates_of_positives_take_probability_1_and_leave_the_model_of_the_others_alone(method):
    f, truth = _pu_world(n_queries=200, seed=4)
    labels = {(q, d): int(t) for q, d, t in zip(f.query_ids, f.doc_ids, truth)}
    plain = fit_model(f, method, labels, seed=1)
    # the same candidates plus copies of positives: unlabelled, with signals like a positive's, flagged as duplicates
    copies = len(f.positives) // 2
    dup_x = f.positives[:copies] + 0.5
    with_dups = Features(f.names, np.vstack([f.candidates, dup_x]), f.query_ids + f.positive_query_ids[:copies],
                         f.doc_ids + [f"copy{i}" for i in range(copies)], np.ones(len(f.candidates) + copies, np.int32),
                         np.concatenate([np.zeros(len(f.candidates), bool), np.ones(copies, bool)]), f.positives, f.positive_query_ids)
    labels |= {(q, d): 1 for q, d in zip(with_dups.query_ids[-copies:], with_dups.doc_ids[-copies:])}
    model = fit_model(with_dups, method, labels, seed=1)
    np.testing.assert_allclose(model.predict(f.candidates), plain.predict(f.candidates), rtol=1e-6, atol=1e-9)
    assert score_candidates(with_dups, model).filter(pa.compute.starts_with(pa.compute.field("doc_id"), "copy")).column("fn_prob").to_pylist() == [1.0] * copies
