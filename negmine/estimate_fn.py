"""Stage — estimate how many mined negatives are in fact relevant (false negatives).

Three estimates, each per source-rank bucket (1–10, 11–30, 31–100, >100/random; a negative drawn
off the candidate list has a null source rank and falls in the last bucket) and over all negatives:

``teacher``
    share of negatives the teacher (``negmine rescore``) scores above their own positive,
    ce(q, d⁻) > ce(q, d⁺) — or, with ``threshold``, ce_prob(q, d⁻) > threshold. Negatives the
    teacher did not score (corpus draws) are left out and counted. A teacher estimate is only as
    good as the teacher: with a bi-encoder teacher it measures agreement with a second retriever.
``labels``
    with a qrels file holding more judgements than were mined with (``qrels_full``), the measured
    share of negatives judged relevant there. Only queries that have extra judgements can reveal
    anything; ``judged_queries`` says how many. (BEIR SciFact's train and test queries are
    disjoint: mining on train and judging with train+test qrels adds no judgement for any mined
    query, so the measured rate is 0 by construction — a check of the pipeline, not of the data.)
``audit``
    from hand labels of an audit sample (CSV ``query_id, neg_id, label`` with label 0/1).
``model``
    the mean P(false negative) (negmine.fn_model, ``negmine fn-scores``) of the negatives: the
    calibrated combination of retriever, teacher, agreement and duplicate signals. Its interval draws
    the model's parameters (from its refits on resampled queries), the queries and each negative's
    outcome (:func:`negmine.fn_model.rate_interval`).

Intervals: for teacher and labels, a percentile bootstrap (Efron & Tibshirani 1993) resampling
*queries* with replacement (negatives of one query are correlated), ``n_boot`` times with a seeded
generator: rate_b = Σ_{q∈sample_b} k_q / Σ_{q∈sample_b} n_q, interval = (2.5th, 97.5th)
percentiles. For audits, the Wilson score interval (Wilson 1927) for k of n:
(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n), z = 1.96.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from negmine.schemas import FN_REPORT

BUCKETS = (("1-10", 1, 10), ("11-30", 11, 30), ("31-100", 31, 100), (">100/random", 101, None))
Z95 = 1.959963984540054


def rank_bucket(source_rank: int | None) -> str:
    """The bucket label of a source rank; ``None`` (a negative drawn off the candidates) is ``>100/random``."""
    if source_rank is None:
        return BUCKETS[-1][0]
    for label, low, high in BUCKETS:
        if source_rank >= low and (high is None or source_rank <= high):
            return label
    return BUCKETS[-1][0]


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(k_per_query: np.ndarray, n_per_query: np.ndarray, n_boot: int = 1000, seed: int = 42) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of Σk/Σn, resampling queries with replacement."""
    k = np.asarray(k_per_query, dtype=np.float64)
    n = np.asarray(n_per_query, dtype=np.float64)
    if len(n) == 0 or n.sum() == 0:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), size=(n_boot, len(n)))
    totals = n[idx].sum(axis=1)
    rates = np.divide(k[idx].sum(axis=1), totals, out=np.zeros(n_boot), where=totals > 0)
    return float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))


def _rows(strategy: str, method: str, flags: dict[str, list[tuple[str, bool]]], n_boot: int, seed: int) -> list[dict]:
    """Report rows per bucket and 'all' from ``flags[bucket] = [(query_id, is_false_negative), ...]``."""
    rows = []
    everything = [x for label, _, _ in BUCKETS for x in flags.get(label, [])]
    for label, items in [("all", everything)] + [(b, flags.get(b, [])) for b, _, _ in BUCKETS]:
        per_query: dict[str, list[int]] = {}
        for qid, fn in items:
            kn = per_query.setdefault(qid, [0, 0])
            kn[0] += int(fn)
            kn[1] += 1
        k = np.array([v[0] for v in per_query.values()], dtype=np.int64)
        n = np.array([v[1] for v in per_query.values()], dtype=np.int64)
        total, hits = int(n.sum()), int(k.sum())
        low, high = bootstrap_interval(k, n, n_boot, seed) if total else (None, None)
        rows.append(_row(strategy, method, label, total, hits, low, high))
    return rows


def _row(strategy, method, bucket, n, k, low, high) -> dict:
    return {
        "strategy": strategy, "method": method, "bucket": bucket, "negatives": n, "false_negatives": k,
        "rate": k / n if n else None, "ci_low": low, "ci_high": high,
    }


def teacher_estimate(negatives: pa.Table, scored_candidates: pa.Table, scored_positives: pa.Table, threshold: float | None = None,
                     n_boot: int = 1000, seed: int = 42) -> tuple[list[dict], int]:
    """Rows of the teacher estimate for one strategy's negatives, and how many negatives had no teacher score."""
    cand = {(q, d): (s, p) for q, d, s, p in zip(*(scored_candidates.column(c).to_pylist() for c in ("query_id", "doc_id", "ce_score", "ce_prob")))}
    pos = {(q, d): s for q, d, s in zip(*(scored_positives.column(c).to_pylist() for c in ("query_id", "doc_id", "ce_score")))}
    flags: dict[str, list[tuple[str, bool]]] = {}
    unscored = 0
    for q, p, d, rank in zip(*(negatives.column(c).to_pylist() for c in ("query_id", "pos_id", "neg_id", "source_rank"))):
        if (q, d) not in cand or (threshold is None and (q, p) not in pos):
            unscored += 1
            continue
        score, prob = cand[(q, d)]
        fn = prob > threshold if threshold is not None else score > pos[(q, p)]
        flags.setdefault(rank_bucket(rank), []).append((q, fn))
    return _rows(_strategy(negatives), "teacher", flags, n_boot, seed), unscored


def label_estimate(negatives: pa.Table, qrels_full: pa.Table, mined_qrels: pa.Table | None = None, n_boot: int = 1000, seed: int = 42) -> tuple[list[dict], int]:
    """Rows of the measured false-negative rate against ``qrels_full``, and the number of mined queries
    that have a judgement in ``qrels_full`` beyond ``mined_qrels`` (0 means the figure can only be 0)."""
    relevant = {(q, d) for q, d, r in zip(*(qrels_full.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))) if r > 0}
    flags: dict[str, list[tuple[str, bool]]] = {}
    for q, d, rank in zip(*(negatives.column(c).to_pylist() for c in ("query_id", "neg_id", "source_rank"))):
        flags.setdefault(rank_bucket(rank), []).append((q, (q, d) in relevant))
    mined = set()
    if mined_qrels is not None:
        mined = set(zip(mined_qrels.column("query_id").to_pylist(), mined_qrels.column("doc_id").to_pylist()))
    queries = set(negatives.column("query_id").to_pylist())
    judged = {q for q, d in zip(qrels_full.column("query_id").to_pylist(), qrels_full.column("doc_id").to_pylist()) if q in queries and (q, d) not in mined}
    return _rows(_strategy(negatives), "labels", flags, n_boot, seed), len(judged)


def audit_sample(negatives_by_strategy: dict[str, pa.Table], corpus: pa.Table, queries: pa.Table, size: int, seed: int = 42) -> pa.Table:
    """A seeded uniform sample of ``size`` negatives per strategy, with query and document text, ``label`` empty."""
    from negmine.retrieve.candidates import doc_texts

    doc_text = dict(zip(corpus.column("doc_id").to_pylist(), doc_texts(corpus)))
    query_text = dict(zip(queries.column("query_id").to_pylist(), queries.column("text").to_pylist()))
    cols: dict[str, list] = {k: [] for k in ("strategy", "query_id", "pos_id", "neg_id", "source_rank", "query_text", "neg_text", "pos_text")}
    for strategy in sorted(negatives_by_strategy):
        table = negatives_by_strategy[strategy]
        rng = np.random.default_rng([seed, table.num_rows])
        chosen = np.sort(rng.choice(table.num_rows, size=min(size, table.num_rows), replace=False))
        for r in table.take(pa.array(chosen, pa.int64())).to_pylist():
            cols["strategy"].append(strategy)
            for c in ("query_id", "pos_id", "neg_id", "source_rank"):
                cols[c].append(r[c])
            cols["query_text"].append(query_text.get(r["query_id"], ""))
            cols["neg_text"].append(doc_text.get(r["neg_id"], ""))
            cols["pos_text"].append(doc_text.get(r["pos_id"], ""))
    table = pa.table({**cols, "source_rank": pa.array(cols["source_rank"], pa.int32())})
    return table.append_column("label", pa.nulls(table.num_rows, pa.int32()))


def audit_estimate(negatives: pa.Table, labels: dict[tuple[str, str], int]) -> list[dict]:
    """Measured rate (Wilson interval) over the labelled (query_id, neg_id) pairs that are this strategy's negatives."""
    pairs = set(zip(negatives.column("query_id").to_pylist(), negatives.column("neg_id").to_pylist()))
    ranks = dict(zip(zip(negatives.column("query_id").to_pylist(), negatives.column("neg_id").to_pylist()), negatives.column("source_rank").to_pylist()))
    found = [(pair, label) for pair, label in sorted(labels.items()) if pair in pairs]
    rows = []
    for bucket in ["all"] + [b for b, _, _ in BUCKETS]:
        items = [label for pair, label in found if bucket == "all" or rank_bucket(ranks[pair]) == bucket]
        n, k = len(items), sum(items)
        low, high = wilson_interval(k, n) if n else (None, None)
        rows.append(_row(_strategy(negatives), "audit", bucket, n, k, low, high))
    return rows


def model_estimate(negatives: pa.Table, features, model, n_boot: int = 1000, seed: int = 42) -> list[dict]:
    """Rows of the model estimate: per bucket, the mean P(false negative) of the negatives with its interval.

    A negative that is a candidate takes its own probability; one drawn off the candidate lists (random,
    star) takes the model's ``off_list_prob``.
    """
    from negmine.fn_model import rate_interval

    row_of = {key: i for i, key in enumerate(zip(features.query_ids, features.doc_ids))}
    items = []  # (bucket, query_id, candidate row or None)
    for q, d, rank in zip(*(negatives.column(c).to_pylist() for c in ("query_id", "neg_id", "source_rank"))):
        items.append((rank_bucket(rank), q, row_of.get((q, d))))
    rows = []
    for label in ["all"] + [b for b, _, _ in BUCKETS]:
        chosen = [x for x in items if label == "all" or x[0] == label]
        listed = [x for x in chosen if x[2] is not None]
        off = [x for x in chosen if x[2] is None]
        if not chosen:
            rows.append(_row(_strategy(negatives), "model", label, 0, 0, None, None))
            continue
        rate, low, high = rate_interval([x[1] for x in listed] + [x[1] for x in off], np.array([x[2] for x in listed], dtype=np.int64),
                                        features, model, np.full(len(off), model.off_list_prob), n_boot, seed)
        row = _row(_strategy(negatives), "model", label, len(chosen), int(round(rate * len(chosen))), low, high)
        row["rate"] = rate
        rows.append(row)
    return rows


def score_ratio(negatives: pa.Table) -> float | None:
    """Mean of retriever_score / pos_retriever_score over negatives where both are known and s⁺ > 0."""
    neg = negatives.column("retriever_score").to_numpy(zero_copy_only=False).astype(np.float64)
    pos = negatives.column("pos_retriever_score").to_numpy(zero_copy_only=False).astype(np.float64)
    ok = ~np.isnan(neg) & ~np.isnan(pos) & (pos > 0)
    return float(np.mean(neg[ok] / pos[ok])) if ok.any() else None


def report_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=FN_REPORT)


def _strategy(negatives: pa.Table) -> str:
    values = set(negatives.column("strategy").to_pylist())
    return values.pop() if len(values) == 1 else ",".join(sorted(values))


def read_qrels_file(path) -> pa.Table:
    """A qrels file: Parquet (the qrels schema) or a BEIR-style TSV (``query-id  corpus-id  score``, header optional)."""
    from pathlib import Path

    from negmine.io import read_table
    from negmine.schemas import QRELS

    path = Path(path)
    if path.suffix == ".parquet":
        return read_table(path, QRELS, "qrels")
    from negmine.ingest import qrels_rows, tsv_rows

    rows = qrels_rows(((n, *parts) for n, parts in tsv_rows(path, 3, skip_header="query-id")), path, "line")
    return pa.table({k: rows[k] for k in ("query_id", "doc_id", "relevance")}, schema=QRELS)


def read_audit_labels(path) -> dict[tuple[str, str], int]:
    """Hand labels: a CSV with columns query_id, neg_id, label (0 or 1); rows with an empty label are skipped."""
    import csv
    from pathlib import Path

    from negmine.errors import BadInputError

    path = Path(path)
    if not path.exists():
        raise BadInputError(path, "audit labels file does not exist")
    labels = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"query_id", "neg_id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise BadInputError(path, f"missing column(s) {sorted(missing)}; audit labels need query_id, neg_id, label")
        for line, row in enumerate(reader, start=2):
            value = (row["label"] or "").strip()
            if value == "":
                continue
            if value not in ("0", "1"):
                raise BadInputError(path, f"label must be 0 or 1, found {value!r}", line=line, field="label")
            labels[(row["query_id"], row["neg_id"])] = int(value)
    return labels
