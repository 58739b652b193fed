"""Arrow schemas of every negmine table, declared once (see docs/data-contract.md).

Every read goes through :func:`negmine.io.read_table`, which checks the file against the
schema named here; every write goes through :func:`negmine.io.write_table`, which casts to it.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

CORPUS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=True),
        pa.field("text", pa.string(), nullable=False),
    ]
)

QUERIES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)

QRELS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("relevance", pa.int32(), nullable=False),
    ]
)

CANDIDATES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)

# s(q, d+) for every labelled positive, whether or not retrieval found it.
# rank is the positive's rank in the same source's candidates, null when it was not retrieved.
POSITIVE_SCORES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=True),
        pa.field("score", pa.float32(), nullable=False),
    ]
)

CLUSTERS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("distance", pa.float32(), nullable=False),
    ]
)

NEGATIVES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("pos_id", pa.string(), nullable=False),
        pa.field("neg_id", pa.string(), nullable=False),
        pa.field("neg_rank", pa.int32(), nullable=False),
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("retriever_score", pa.float32(), nullable=True),
        pa.field("pos_retriever_score", pa.float32(), nullable=True),
        pa.field("ce_score", pa.float32(), nullable=True),
        pa.field("pos_ce_score", pa.float32(), nullable=True),
        pa.field("source_rank", pa.int32(), nullable=True),
        pa.field("cluster_id", pa.int32(), nullable=True),
        # curriculum stage (1 = easiest) for the curriculum strategy; null for every other strategy
        pa.field("stage", pa.int32(), nullable=True),
    ]
)

# Teacher scores (negmine.rescore): ce_score is the raw teacher score (a cross-encoder logit, or a
# bi-encoder cosine), ce_prob its [0, 1] scale (σ(logit), or (cos + 1) / 2). Thresholds apply to ce_prob.
_TEACHER_FIELDS = [
    pa.field("ce_score", pa.float32(), nullable=False),
    pa.field("ce_prob", pa.float32(), nullable=False),
]
SCORED_CANDIDATES = pa.schema(list(CANDIDATES) + _TEACHER_FIELDS)
SCORED_POSITIVES = pa.schema(list(POSITIVE_SCORES) + _TEACHER_FIELDS)

# Candidates the denoise strategy judged likely false negatives (teacher prob above its threshold).
PSEUDO_POSITIVES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_rank", pa.int32(), nullable=False),
        pa.field("ce_prob", pa.float32(), nullable=False),
    ]
)

# negmine estimate-fn: false-negative rate per strategy, method (teacher | labels | audit) and source-rank bucket.
FN_REPORT = pa.schema(
    [
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("bucket", pa.string(), nullable=False),
        pa.field("negatives", pa.int64(), nullable=False),
        pa.field("false_negatives", pa.int64(), nullable=False),
        pa.field("rate", pa.float64(), nullable=True),
        pa.field("ci_low", pa.float64(), nullable=True),
        pa.field("ci_high", pa.float64(), nullable=True),
    ]
)

# Documents whose normalised text equals, or nearly equals, that of a labelled positive (negmine.duplicates):
# one row per (document, positive) pair, doc_id != dup_of. kind is "exact" (same normalised text) or "near"
# (word-shingle Jaccard similarity at or above the threshold); similarity is that Jaccard (1.0 for exact).
DUPLICATES = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("dup_of", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("similarity", pa.float32(), nullable=False),
    ]
)

# P(false negative) of each candidate of a source (negmine.fn_model): the probability that the candidate
# is an unlabelled positive of its query. source_rank is the candidate's rank in candidates_<source>.
FN_SCORES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_rank", pa.int32(), nullable=False),
        pa.field("fn_prob", pa.float32(), nullable=False),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "corpus": CORPUS,
    "queries": QUERIES,
    "qrels": QRELS,
    "candidates": CANDIDATES,
    "positive_scores": POSITIVE_SCORES,
    "clusters": CLUSTERS,
    "negatives": NEGATIVES,
    "scored_candidates": SCORED_CANDIDATES,
    "scored_positives": SCORED_POSITIVES,
    "pseudo_positives": PSEUDO_POSITIVES,
    "fn_report": FN_REPORT,
    "duplicates": DUPLICATES,
    "fn_scores": FN_SCORES,
}


# negmine.compat: the negatives sentence-transformers' mine_hard_negatives rules choose, per query
NEGATIVES_COMPAT = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("neg_id", pa.string(), nullable=False),
        pa.field("neg_rank", pa.int32(), nullable=False),  # 1-based, best first
        pa.field("score", pa.float32(), nullable=False),
    ]
)
