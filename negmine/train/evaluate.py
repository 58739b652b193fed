"""Evaluation: rank a test split with a bi-encoder and score it with ir-measures (trec_eval's measures).

Metrics are computed by ``ir_measures`` (MacAvaney et al., ECIR 2022), which wraps pytrec_eval, not by
hand. Names follow ir-measures (``nDCG@10``, ``RR@10``, ``R@100``, ``AP``, ``P@5`` …); ``MRR@10`` is
accepted as an alias of ``RR@10``. :func:`compare` runs a two-sided paired t-test over per-query values.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from negmine.errors import BadInputError, StageError

DEFAULT_METRICS = ("nDCG@10", "RR@10", "R@100")
ALIASES = {"MRR@10": "RR@10", "MRR": "RR", "Recall@100": "R@100", "Recall@10": "R@10", "NDCG@10": "nDCG@10"}
PER_QUERY = pa.schema([("query_id", pa.string()), ("measure", pa.string()), ("value", pa.float64())])


def parse_metrics(names) -> list:
    import ir_measures

    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(ALIASES.get(name, name)))
        except (ValueError, NameError, SyntaxError) as exc:
            raise BadInputError("--metric", f"unknown metric {name!r} ({exc}); e.g. {list(DEFAULT_METRICS)}") from None
    return out


def dense_ranking(model, corpus: pa.Table, queries: pa.Table, k: int = 100, batch_size: int = 64, corpus_embeddings: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Top-``k`` documents per query by cosine similarity (exact search, ties by corpus row:
    negmine.retrieve.search.top_k): {query_id: {doc_id: score}}."""
    from negmine.retrieve.candidates import doc_texts
    from negmine.retrieve.search import shard_searcher, top_k
    from negmine.retrieve.encode import encode

    emb = corpus_embeddings if corpus_embeddings is not None else encode(model, doc_texts(corpus), batch_size)
    q_emb = encode(model, queries.column("text").to_pylist(), batch_size)
    scores, rows = top_k(shard_searcher(emb), q_emb, k)
    ids = corpus.column("doc_id").to_pylist()
    return {
        qid: {ids[r]: float(s) for r, s in zip(row_r, row_s) if r >= 0}
        for qid, row_r, row_s in zip(queries.column("query_id").to_pylist(), rows, scores)
    }


def qrels_dict(qrels: pa.Table) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for q, d, r in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        out.setdefault(q, {})[d] = int(r)
    return out


def evaluate_ranking(ranking: dict[str, dict[str, float]], qrels: pa.Table, metrics=DEFAULT_METRICS) -> tuple[dict[str, float], pa.Table]:
    """Aggregate metrics (mean over judged queries) and a per-query table (query_id, measure, value).

    A judged query that the ranking does not contain scores 0 on every metric.
    """
    import ir_measures

    measures = parse_metrics(metrics)
    judged = qrels_dict(qrels)
    if not judged:
        raise StageError("no judged queries to evaluate")
    per_query = {(m, q): 0.0 for m in measures for q in judged}
    for metric in ir_measures.iter_calc(measures, judged, ranking):
        if metric.query_id in judged:
            per_query[(metric.measure, metric.query_id)] = float(metric.value)
    names = {m: str(m) for m in measures}
    rows = sorted(((q, names[m], v) for (m, q), v in per_query.items()), key=lambda r: (r[1], r[0]))
    table = pa.table({"query_id": [r[0] for r in rows], "measure": [r[1] for r in rows], "value": [r[2] for r in rows]}, schema=PER_QUERY)
    aggregate = {names[m]: float(np.mean([per_query[(m, q)] for q in judged])) for m in measures}
    return aggregate, table


def compare(a: pa.Table, b: pa.Table, measure: str) -> dict:
    """Two-sided paired t-test of b against a over the queries both tables hold for ``measure``."""
    from scipy import stats

    def values(t):
        rows = [r for r in t.to_pylist() if r["measure"] == measure]
        return {r["query_id"]: r["value"] for r in rows}

    va, vb = values(a), values(b)
    common = sorted(set(va) & set(vb))
    if len(common) < 2:
        raise StageError(f"fewer than two queries in common for {measure!r}; were both evaluated on the same split?")
    x, y = np.array([va[q] for q in common]), np.array([vb[q] for q in common])
    if np.allclose(x, y):
        p = 1.0
    else:
        p = float(stats.ttest_rel(y, x).pvalue)
    return {"measure": measure, "queries": len(common), "mean_a": float(x.mean()), "mean_b": float(y.mean()), "delta": float(y.mean() - x.mean()), "p_value": p}
