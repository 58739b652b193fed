"""P(false negative) of every candidate: a calibrated probability that it is an unlabelled positive.

The signals (negmine.fn_features) are computed the same way for a candidate d of query q and for a
labelled positive p: the retriever's score standardised per query and its margin to q's best
positive, d's rank, the same two for every teacher's scores (``negmine rescore``), and d's rank in
the other retriever's list; plus one rule: a document whose text duplicates one of q's positives
(``negmine.duplicates``) gets probability 1.

Two ways to fit a logistic model σ(w·x + w₀) on the standardised signals:

``pu`` (default, no labels needed)
    positive-unlabelled learning (Elkan & Noto, KDD 2008; the joint likelihood of Ward et al., Biometrics
    2009). The labelled positives that the retriever returned, of queries with at least two positives
    (each measured against the query's other positives, as an unlabelled positive would be), are the
    labelled class; every other candidate is unlabelled. With P(positive | x) = σ(w·x + w₀) and a
    constant labelling frequency c = P(labelled | positive), P(labelled | x) = c · σ(w·x + w₀); w, w₀
    and c are fitted together by maximum likelihood:
        ℓ = Σ_labelled log(c·σ(zᵢ)) + Σ_unlabelled log(1 − c·σ(zᵢ)) − ½λ‖w‖².
    It assumes the labelled positives are a random sample of all positives in the candidate lists
    ("selected completely at random"); where annotators judged only what one system ranked first, it
    underestimates.
``labels``
    supervised, on audited labels (``query_id, neg_id, label``) of candidates: P(positive | x) = σ(w·x + w₀).

Duplicates of a positive take probability 1 by the rule and are left out of both fits: the model is
P(positive | x) of the other candidates.

Uncertainty (:func:`rate_interval`): a strategy's false-negative rate Σ pᵢ / n gets a 95% interval from
draws of the parameters θ, of the queries (resampled with replacement) and of each negative's
Bernoulli(pᵢ) outcome. θ is drawn from B refits of the model on cluster-bootstrap resamples of the
queries (Davison & Hinkley 1997, §3.8; :attr:`FnModel.replicates`), so the interval carries the
calibration's own uncertainty — for the PU model that of c, refitted each time from the same start —
and not only a local approximation of it (a model stored without refits draws θ from the Laplace
approximation N(θ̂, H⁻¹) instead).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from negmine.errors import StageError
from negmine.fn_features import Features, build_features  # noqa: F401  (the signals; build_features is part of this module's API)

FIT_METHODS = ("pu", "labels")
L2 = 1.0  # ridge penalty on the standardised weights (not the intercept)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, weights: np.ndarray | None = None,
                 start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Penalised maximum likelihood of σ(w·x + w₀) by Newton's method; returns (weights with the
    intercept last, the Hessian at the optimum). The penalty ½·l2·‖w‖² leaves the intercept free;
    ``weights`` count each row that many times (a bootstrap resample); ``start`` is where Newton starts."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    n = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    penalty = np.full(xb.shape[1], l2)
    penalty[-1] = 0.0
    prior = np.clip(np.sum(n * y) / max(np.sum(n), 1e-12), 1e-6, 1 - 1e-6)
    w = np.zeros(xb.shape[1])
    w[-1] = np.log(prior / (1 - prior))
    if start is not None:
        w = np.asarray(start, dtype=np.float64).copy()

    def objective(v: np.ndarray) -> float:
        z = xb @ v
        return float(np.sum(n * (np.logaddexp(0.0, z) - y * z)) + 0.5 * np.sum(penalty * v * v))

    def hessian(v: np.ndarray) -> np.ndarray:
        p = _sigmoid(xb @ v)
        return (xb * (n * p * (1 - p))[:, None]).T @ xb + np.diag(penalty) + 1e-9 * np.eye(len(v))

    current = objective(w)
    for _ in range(100):  # Newton's method with a backtracking line search (the loss is convex)
        grad = xb.T @ (n * (_sigmoid(xb @ w) - y)) + penalty * w
        step = np.linalg.solve(hessian(w), grad)
        t = 1.0
        while t > 1e-10:
            trial = objective(w - t * step)
            if trial <= current - 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
        w = w - t * step
        done = current - trial < 1e-10 * max(1.0, abs(current))
        current = trial
        if done or np.abs(t * step).max() < 1e-8:
            break
    hess = hessian(w)
    return w, hess


@dataclass
class FnModel:
    """A fitted P(false negative) model: standardisation, parameters θ = (w, w₀[, logit c]) and their covariance."""

    method: str
    names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    covariance: np.ndarray
    c: float = 0.0  # PU: the labelling frequency P(labelled | positive); 0 for a model fitted on audited labels
    off_list_prob: float = 0.0  # a corpus document outside the candidate lists
    stats: dict = field(default_factory=dict)
    replicates: np.ndarray | None = None  # (B, parameters): θ refitted on B cluster-bootstrap resamples of the queries

    def _design(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        return np.hstack([z, np.ones((len(z), 1))])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(false negative) of each row of signals: of an *unlabelled* candidate, so for PU
        P(positive | x, unlabelled) = (1 − c)·σ(z) / (1 − c·σ(z)) (Elkan & Noto, KDD 2008, §3)."""
        return self._posterior(self._design(x) @ self.weights[: len(self.names) + 1], self.c if self.method == "pu" else 0.0)

    def draws(self, x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, rows) probabilities under n draws of the parameters: from the bootstrap refits when the model
        has them (:func:`bootstrap_refits`), else from the Laplace approximation N(θ̂, H⁻¹)."""
        if self.replicates is not None and len(self.replicates):
            theta = self.replicates[rng.integers(0, len(self.replicates), n)]
        else:
            theta = rng.multivariate_normal(self.weights, self.covariance, size=n, method="eigh")
        z = self._design(x) @ theta[:, : len(self.names) + 1].T  # (rows, n)
        c = _sigmoid(theta[:, -1]) if self.method == "pu" else np.zeros(n)
        return self._posterior(z, c[None, :]).T

    @staticmethod
    def _posterior(z: np.ndarray, c) -> np.ndarray:
        p = _sigmoid(z)
        return (1 - c) * p / (1 - c * p)

    def to_dict(self) -> dict:
        return {"method": self.method, "names": self.names, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "covariance": self.covariance.tolist(), "c": self.c,
                "off_list_prob": self.off_list_prob, "stats": self.stats} | (
                    {"replicates": self.replicates.tolist()} if self.replicates is not None else {})

    @classmethod
    def from_dict(cls, d: dict) -> "FnModel":
        return cls(d["method"], list(d["names"]), np.asarray(d["mean"]), np.asarray(d["scale"]), np.asarray(d["weights"]),
                   np.asarray(d["covariance"]), float(d["c"]), float(d["off_list_prob"]), d.get("stats", {}),
                   np.asarray(d["replicates"]) if d.get("replicates") is not None else None)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    scale = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    return mean, np.where(scale > 1e-12, scale, 1.0)


def _pu_objective(theta: np.ndarray, xb: np.ndarray, labelled: np.ndarray, l2: float, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Negative penalised log-likelihood of the PU model and its gradient; θ = (w, w₀, logit c); ``weights``
    count each row that many times."""
    n = np.ones(len(xb)) if weights is None else weights
    w, gamma = theta[:-1], theta[-1]
    z = xb @ w
    log_p = -np.logaddexp(0.0, -z)  # log σ(z)
    log_c = -np.logaddexp(0.0, -gamma)
    c = np.exp(log_c)
    p = np.exp(log_p)
    q = np.minimum(c * p, 1 - 1e-12)
    penalty = np.full(len(w), l2)
    penalty[-1] = 0.0
    value = -(np.sum(n[labelled] * (log_c + log_p[labelled])) + np.sum(n[~labelled] * np.log1p(-q[~labelled]))) + 0.5 * np.sum(penalty * w * w)
    dz = n * np.where(labelled, -(1 - p), c * p * (1 - p) / (1 - q))
    dgamma = np.sum(n * np.where(labelled, -(1 - c), p * c * (1 - c) / (1 - q)))
    return float(value), np.concatenate([xb.T @ dz + penalty * w, [dgamma]])


def _numeric_hessian(fun, theta: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    n = len(theta)
    h = np.empty((n, n))
    for i in range(n):
        step = np.zeros(n)
        step[i] = eps
        h[:, i] = (fun(theta + step)[1] - fun(theta - step)[1]) / (2 * eps)
    return (h + h.T) / 2


BOOTSTRAP = 100  # refits of the model on resampled queries, for the rate intervals


def _cluster_weights(query_ids: list[str], n_boot: int, seed: int):
    """Per bootstrap replicate, how many times each row is drawn when the *queries* are resampled with
    replacement (a row counts as often as its query; the cluster bootstrap, Davison & Hinkley 1997, §3.8)."""
    uniq, key = np.unique(np.asarray(query_ids, dtype=object), return_inverse=True)
    rng = np.random.default_rng([seed, len(uniq)])
    for _ in range(n_boot):
        yield np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))[key].astype(np.float64)


def fit_pu(features: Features, seed: int = 42, n_boot: int = BOOTSTRAP) -> FnModel:
    """The positive-unlabelled model on ``features`` (see the module docstring), refitted on ``n_boot``
    cluster-bootstrap resamples of the queries (:attr:`FnModel.replicates`)."""
    from scipy.optimize import minimize

    n_pos = len(features.positives)
    if n_pos < 10:
        raise StageError(
            f"the false-negative model needs labelled positives to learn from: {n_pos} retrieved positives of queries with "
            "two or more positives (at least 10); fit on audited labels instead (negmine fn-scores --fn-labels)"
        )
    # a duplicate of a positive has probability 1 by rule: the model is P(positive | x) of the others, fitted without them
    keep = ~features.duplicate
    x = np.vstack([features.positives, features.candidates[keep]])
    labelled = np.concatenate([np.ones(n_pos, bool), np.zeros(int(keep.sum()), bool)])
    mean, scale = _standardise(x)
    xb = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    # start from the labelled-vs-unlabelled classifier g (Elkan & Noto) with c = ½
    w0, _ = fit_logistic(xb[:, :-1], labelled.astype(float))
    start = np.concatenate([w0[:-1], [w0[-1] + np.log(2.0)], [0.0]])

    def fit(weights, begin):
        fun = lambda theta: _pu_objective(theta, xb, labelled, L2, weights)  # noqa: E731
        return minimize(fun, begin, jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-8}), fun

    result, fun = fit(None, start)
    theta = result.x
    hess = _numeric_hessian(fun, theta) + 1e-9 * np.eye(len(theta))
    covariance = np.linalg.pinv(hess)
    c = float(1 / (1 + np.exp(-theta[-1])))
    # each replicate refits from the same start as θ̂ (c re-estimated too): the bootstrap of the whole fit
    replicates = np.array([fit(weights, start)[0].x for weights in _cluster_weights(features.positive_query_ids + [q for q, k in zip(features.query_ids, keep) if k], n_boot, seed)])
    model = FnModel("pu", features.names, mean, scale, theta, covariance, c, replicates=replicates.reshape(-1, len(theta)))
    model.stats = {"labelled_positives": n_pos, "unlabelled": int(keep.sum()), "c": round(c, 6), "converged": bool(result.success)}
    return model


def fit_labels(features: Features, labels: dict[tuple[str, str], int], seed: int = 42, n_boot: int = BOOTSTRAP) -> FnModel:
    """A supervised model on audited labels of candidates ((query_id, doc_id) → 0/1), refitted on ``n_boot``
    cluster-bootstrap resamples of the labelled queries."""
    # duplicates of a positive have probability 1 by rule: the model is fitted on the others
    idx = [i for i, key in enumerate(zip(features.query_ids, features.doc_ids)) if key in labels and not features.duplicate[i]]
    y = np.array([labels[(features.query_ids[i], features.doc_ids[i])] for i in idx], dtype=np.float64)
    if len(idx) < 10 or y.sum() == 0 or y.sum() == len(y):
        raise StageError(f"the false-negative model needs audited labels of candidates with both outcomes: {len(idx)} labelled candidates, {int(y.sum())} positive")
    x = features.candidates[idx]
    mean, scale = _standardise(features.candidates[~features.duplicate])
    z = (x - mean) / scale
    w, hess = fit_logistic(z, y)
    replicates = np.array([fit_logistic(z, y, weights=weights, start=w)[0] for weights in _cluster_weights([features.query_ids[i] for i in idx], n_boot, seed)])
    model = FnModel("labels", features.names, mean, scale, w, np.linalg.pinv(hess), replicates=replicates.reshape(-1, len(w)))
    model.stats = {"labelled_candidates": len(idx), "labelled_false_negatives": int(y.sum())}
    return model


def fit_model(features: Features, method: str = "pu", labels: dict | None = None, seed: int = 42, corpus_size: int | None = None,
              recall: float | None = None, n_boot: int = BOOTSTRAP) -> FnModel:
    """Fit with ``method`` and set the probability of a corpus document outside the candidate lists:
    the expected unlabelled positives of a query beyond its list, m · (1 − R) / R with m the expected
    number inside it and R the recall of labelled positives, spread over the N − K documents not listed.
    ``n_boot`` refits on resampled queries give the rate intervals their calibration uncertainty."""
    if method not in FIT_METHODS:
        raise StageError(f"unknown false-negative model {method!r}; choose from {sorted(FIT_METHODS)}")
    model = fit_pu(features, seed, n_boot) if method == "pu" else fit_labels(features, labels or {}, seed, n_boot)
    if corpus_size and recall and len(features.candidates):
        probs = model.predict(features.candidates)
        per_query = probs.sum() / max(len(set(features.query_ids)), 1)
        beyond = max(corpus_size - features.list_size, 1)
        model.off_list_prob = float(min(1.0, per_query * (1 - recall) / max(recall, 1e-9) / beyond))
    model.stats["mean_fn_prob"] = round(float(model.predict(features.candidates).mean()), 6) if len(features.candidates) else None
    return model


def score_candidates(features: Features, model: FnModel) -> pa.Table:
    """The ``fn_scores`` table: P(false negative) of every candidate; 1 for duplicates of a positive."""
    from negmine.schemas import FN_SCORES

    probs = model.predict(features.candidates) if len(features.candidates) else np.zeros(0)
    probs = np.where(features.duplicate, 1.0, probs)
    table = pa.table({"query_id": features.query_ids, "doc_id": features.doc_ids, "source_rank": pa.array(features.ranks, pa.int32()),
                      "fn_prob": pa.array(probs.astype(np.float32), pa.float32())}, schema=FN_SCORES)
    return table.sort_by([("query_id", "ascending"), ("source_rank", "ascending"), ("doc_id", "ascending")])


def rate_interval(query_ids: list[str], rows: np.ndarray | None, features: Features, model: FnModel, extra_probs: np.ndarray | None = None,
                  n_boot: int = 1000, seed: int = 42) -> tuple[float, float, float]:
    """Estimated false-negative rate of a set of negatives and its 95% interval.

    ``rows`` index the negatives that are candidates into ``features`` (None for none); ``extra_probs``
    are fixed probabilities of the others (in that order after the candidates: corpus draws, duplicates).
    The interval draws the model (weights and c), resamples the queries and draws each negative's outcome.
    """
    rng = np.random.default_rng(seed)
    n = len(query_ids)
    if n == 0:
        return 0.0, 0.0, 0.0
    fixed = np.asarray(extra_probs if extra_probs is not None else np.zeros(0), dtype=np.float64)
    cand_x = features.candidates[rows] if rows is not None and len(rows) else np.zeros((0, len(features.names)))
    dup = features.duplicate[rows] if rows is not None and len(rows) else np.zeros(0, dtype=bool)
    point = np.concatenate([np.where(dup, 1.0, model.predict(cand_x)) if len(cand_x) else np.zeros(0), fixed])
    draws = model.draws(cand_x, n_boot, rng) if len(cand_x) else np.zeros((n_boot, 0))
    draws = np.where(dup[None, :], 1.0, draws)
    draws = np.hstack([draws, np.broadcast_to(fixed, (n_boot, len(fixed)))])
    uniq, qkey = np.unique(np.asarray(query_ids), return_inverse=True)
    rates = np.empty(n_boot)
    for b in range(n_boot):
        weight = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))[qkey]
        outcome = rng.random(n) < draws[b]
        total = weight.sum()
        rates[b] = (weight * outcome).sum() / total if total else 0.0
    return float(point.mean()), float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))
