"""Export the negatives triple table as training files for the libraries that consume hard negatives.

Every exporter is a pure function ``(negatives, queries, corpus, qrels, **options) -> (table, stats)``;
text is joined from ``queries`` and ``corpus`` (the triple table holds ids only, docs/data-contract.md). Rows follow
the order of the queries table, then positive id, then ``neg_rank``, so the same run exports the same bytes.

Formats (``EXPORTERS``):

- ``sentence-transformers`` — the layouts of ``sentence_transformers.util.mine_hard_negatives``
  (``output_format``), ready for ``SentenceTransformerTrainer``:
  ``n-tuple`` (anchor, positive, negative_1..negative_n; one row per (query, positive), pairs with fewer
  than n negatives are dropped and counted), ``triplet`` (anchor, positive, negative; one row per negative),
  ``labeled-pair`` (anchor, positive, label; 1 for each positive, 0 for each distinct negative of the query)
  and ``labeled-list`` (anchor, positive: [the positive, its negatives...], labels: [1, 0, ...]; one row
  per (query, positive), for listwise reranker losses such as LambdaLoss).
- ``flagembedding`` — FlagEmbedding's fine-tuning JSONL: ``{"query", "pos": [...], "neg": [...]}``, one line per query.
- ``tevatron`` — Tevatron's training JSONL, one line per query, in one of two layouts: ``passages``
  ``{"query_id", "query", "positive_passages", "negative_passages"}`` with passages ``{"docid", "title", "text"}``,
  or ``ids`` ``{"query_id", "query_text", "positive_document_ids", "negative_document_ids"}`` with a separate
  corpus file of ``{"docid", "title", "text"}`` records (:func:`tevatron_corpus`: the documents the export names).

Scores (``scores``: a mapping (query_id, doc_id) → score, from the retriever or a teacher, see
negmine.runners.export), for distillation. Where they are given, each format carries them as its consumer reads them:

- sentence-transformers, as ``mine_hard_negatives(output_scores=True)`` writes them: ``scores``
  [s(q, positive), s(q, negative_1), ..., s(q, negative_n)] after the texts (n-tuple; triplet the same with
  one negative); ``MarginMSELoss`` takes the margins s(q, positive) - s(q, negative_i) from it, and
  ``DistillKLDivLoss`` the scores themselves. labeled-pair: ``score`` in place of ``label``; labeled-list:
  ``scores`` (one per document) in place of ``labels``.
- FlagEmbedding: ``pos_scores`` and ``neg_scores`` after ``neg``, one per document of ``pos`` and ``neg``
  (its ``knowledge_distillation`` training reads them).
- Tevatron: a ``score`` in every passage (its distillation dataset reads it). The ``ids`` layout cannot
  hold them: Tevatron reads that layout's scores from the corpus, one per document for every query.

Without scores no file has a score field.

Documents are ``title + " " + text`` (as the retrievers and the trainer saw them) except in Tevatron,
which keeps the title apart.

Group ids (``group_ids``), so that another trainer can mask in-batch false negatives as ``negmine train``
does (negmine.train.collisions): every row gets the ids of its texts and its query's positive group, appended
after the existing fields (which stay as they are) in this order:

1. ``query_id`` — the query of the row (Tevatron records have it already, in the first place);
2. the document ids, cell by cell — sentence-transformers: ``pos_id``, ``neg_id_1..n`` (n-tuple; the ids
   of ``positive``, ``negative_1..n``), ``pos_id``, ``neg_id`` (triplet), ``doc_id`` (labeled-pair; the
   id of ``positive``, whatever its label), ``doc_ids`` (labeled-list; the ids of the ``positive`` list);
   FlagEmbedding: ``pos_ids``, ``neg_ids`` (the ids of ``pos`` and ``neg``, in their order); Tevatron:
   none, the passages' ``docid`` (or the document id lists) are the ids;
3. ``positive_ids`` — the query's positive group, sorted: its labelled positives (relevance > 0) and
   their text duplicates from the run's ``duplicates.parquet`` when it has one. An in-batch document
   whose id is in an anchor's ``positive_ids`` is no negative of that anchor.

The default (``group_ids=None``) adds them where the consumer ignores extra fields (FlagEmbedding's and
Tevatron's loaders read their keys by name) and leaves them out of the sentence-transformers layouts:
``SentenceTransformerTrainer`` would take every extra column as one more text input. Drop them
(``dataset.remove_columns``) before handing such a file to the trainer, or pass the row index as a
``label`` column to a loss that looks the ids up, as negmine.train.trainer does.
"""

from __future__ import annotations

from typing import Callable, Mapping

import pyarrow as pa

from negmine.errors import BadInputError

ST_LAYOUTS = ("n-tuple", "triplet", "labeled-pair", "labeled-list")
TEVATRON_LAYOUTS = ("passages", "ids")

Scores = Mapping[tuple[str, str], float]


def _positive_ids(qrels: pa.Table, duplicates: pa.Table | None, doc_text: dict) -> dict[str, list[str]]:
    """query_id → its positive group (labelled positives ∪ their duplicates) among the corpus, sorted."""
    from negmine.train.collisions import positive_groups

    return {q: sorted(d for d in group if d in doc_text) for q, group in positive_groups(qrels, duplicates).items()}


def _lookups(queries: pa.Table, corpus: pa.Table, qrels: pa.Table):
    from negmine.retrieve.candidates import doc_texts

    query_ids = queries.column("query_id").to_pylist()
    query_text = dict(zip(query_ids, queries.column("text").to_pylist()))
    doc_ids = corpus.column("doc_id").to_pylist()
    doc_text = dict(zip(doc_ids, doc_texts(corpus)))
    positives: dict[str, list[str]] = {}
    for q, d, r in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance"))):
        if r > 0 and q in query_text and d in doc_text:
            positives.setdefault(q, []).append(d)
    return query_ids, query_text, doc_text, positives


def _grouped(negatives: pa.Table) -> dict[str, dict[str, list[str]]]:
    """query_id → pos_id → neg_ids in neg_rank order."""
    ordered = negatives.sort_by([("query_id", "ascending"), ("pos_id", "ascending"), ("neg_rank", "ascending")])
    grouped: dict[str, dict[str, list[str]]] = {}
    for q, p, n in zip(*(ordered.column(c).to_pylist() for c in ("query_id", "pos_id", "neg_id"))):
        grouped.setdefault(q, {}).setdefault(p, []).append(n)
    return grouped


def _query_negatives(by_pos: dict[str, list[str]]) -> list[str]:
    """Distinct negatives of a query across its positives, first occurrence first."""
    return list(dict.fromkeys(n for pos in sorted(by_pos) for n in by_pos[pos]))


def _check_scores(scores: Scores | None, pairs) -> None:
    """Bad input unless every (query_id, doc_id) of ``pairs`` has a score."""
    if scores is None:
        return
    missing = [pair for pair in dict.fromkeys(pairs) if pair not in scores]
    if missing:
        q, d = missing[0]
        raise BadInputError(
            "--scores",
            f"{len(missing)} (query, document) pairs of the export have no score, the first: query {q!r}, document {d!r}; "
            "scores cover the retrieved candidates and the labelled positives, so a negative drawn from the whole corpus "
            "(strategies random, star) has none",
        )


def _score_list(scores: Scores, q: str, docs: list[str]) -> list[float]:
    return [scores[(q, d)] for d in docs]


def sentence_transformers_export(
    negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table, layout: str = "n-tuple", num_negatives: int | None = None,
    group_ids: bool | None = None, duplicates: pa.Table | None = None, scores: Scores | None = None,
) -> tuple[pa.Table, dict]:
    """Columns of ``mine_hard_negatives(output_format=layout)``, and with ``scores`` those of ``output_scores=True``.

    ``num_negatives``: the n-tuple's negative columns (default: the widest pair), or the most negatives of a
    labeled-list row (default: all of the pair's). With ``group_ids`` (off by default: the trainer would read
    extra columns as texts), the id columns of the module docstring follow.
    """
    if layout not in ST_LAYOUTS:
        raise BadInputError("--layout", f"unknown sentence-transformers layout {layout!r}; choose from {sorted(ST_LAYOUTS)}")
    query_ids, query_text, doc_text, _ = _lookups(queries, corpus, qrels)
    grouped = _grouped(negatives)
    pairs = [(q, p, grouped[q][p]) for q in query_ids if q in grouped for p in sorted(grouped[q])]
    stats = {"layout": layout, "pairs": len(pairs), "queries": sum(q in grouped for q in query_ids)}
    texts = lambda ids: pa.array([doc_text[d] for d in ids], pa.string())  # noqa: E731
    score_lists = lambda rows: pa.array([_score_list(scores, q, docs) for q, docs in rows], pa.list_(pa.float64()))  # noqa: E731
    if layout == "triplet":
        rows = [(q, p, n) for q, p, negs in pairs for n in negs]
        _check_scores(scores, [(q, d) for q, p, n in rows for d in (p, n)])
        columns = {"anchor": pa.array([query_text[q] for q, _, _ in rows], pa.string()), "positive": texts(p for _, p, _ in rows), "negative": texts(n for _, _, n in rows)}
        if scores is not None:
            columns["scores"] = score_lists((q, [p, n]) for q, p, n in rows)
        ids = {"pos_id": [p for _, p, _ in rows], "neg_id": [n for _, _, n in rows]}
    elif layout == "labeled-pair":
        rows = [
            (q, d, label)
            for q in query_ids
            if q in grouped
            for d, label in [(p, 1) for p in sorted(grouped[q])] + [(n, 0) for n in _query_negatives(grouped[q])]
        ]
        _check_scores(scores, [(q, d) for q, d, _ in rows])
        columns = {"anchor": pa.array([query_text[q] for q, _, _ in rows], pa.string()), "positive": texts(d for _, d, _ in rows)}
        if scores is None:
            columns["label"] = pa.array([label for _, _, label in rows], pa.int64())
        else:
            columns["score"] = pa.array([scores[(q, d)] for q, d, _ in rows], pa.float64())
        ids = {"doc_id": [d for _, d, _ in rows]}
    elif layout == "labeled-list":
        if num_negatives is not None and num_negatives < 1:
            raise BadInputError("--num-negatives", f"must be at least 1, got {num_negatives}")
        rows = [(q, p, [p] + negs[:num_negatives]) for q, p, negs in pairs]
        _check_scores(scores, [(q, d) for q, _, docs in rows for d in docs])
        columns = {
            "anchor": pa.array([query_text[q] for q, _, _ in rows], pa.string()),
            "positive": pa.array([[doc_text[d] for d in docs] for _, _, docs in rows], pa.list_(pa.string())),
        }
        if scores is None:
            columns["labels"] = pa.array([[1] + [0] * (len(docs) - 1) for _, _, docs in rows], pa.list_(pa.int64()))
        else:
            columns["scores"] = score_lists((q, docs) for q, _, docs in rows)
        ids = {"doc_ids": [docs for _, _, docs in rows]}
    else:
        width = num_negatives if num_negatives is not None else max((len(negs) for _, _, negs in pairs), default=0)
        if width < 1:
            raise BadInputError("--num-negatives", f"must be at least 1, got {width}")
        rows = [(q, p, negs[:width]) for q, p, negs in pairs if len(negs) >= width]
        stats["pairs_dropped_short"] = len(pairs) - len(rows)
        _check_scores(scores, [(q, d) for q, p, negs in rows for d in [p, *negs]])
        columns = {"anchor": pa.array([query_text[q] for q, _, _ in rows], pa.string()), "positive": texts(p for _, p, _ in rows)}
        for i in range(width):
            columns[f"negative_{i + 1}"] = texts(negs[i] for _, _, negs in rows)
        if scores is not None:
            columns["scores"] = score_lists((q, [p, *negs]) for q, p, negs in rows)
        ids = {"pos_id": [p for _, p, _ in rows]} | {f"neg_id_{i + 1}": [negs[i] for _, _, negs in rows] for i in range(width)}
    if group_ids:
        group = _positive_ids(qrels, duplicates, doc_text)
        columns["query_id"] = pa.array([q for q, _, _ in rows], pa.string())
        columns |= {k: pa.array(v, pa.list_(pa.string()) if k == "doc_ids" else pa.string()) for k, v in ids.items()}
        columns["positive_ids"] = pa.array([group.get(q, []) for q, _, _ in rows], pa.list_(pa.string()))
    table = pa.table(columns)
    stats["rows"] = table.num_rows
    return table, stats


def flagembedding_export(
    negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table, group_ids: bool | None = None, duplicates: pa.Table | None = None,
    scores: Scores | None = None,
) -> tuple[pa.Table, dict]:
    """FlagEmbedding fine-tuning data: one ``{"query", "pos", "neg"}`` record per query, with ``scores``
    ``{"pos_scores", "neg_scores"}`` after them, and unless ``group_ids`` is False,
    ``{"query_id", "pos_ids", "neg_ids", "positive_ids"}`` last."""
    query_ids, query_text, doc_text, positives = _lookups(queries, corpus, qrels)
    grouped = _grouped(negatives)
    group, with_ids = _positive_ids(qrels, duplicates, doc_text), group_ids is not False  # on by default
    records = [(q, positives.get(q, sorted(grouped[q])), _query_negatives(grouped[q])) for q in query_ids if q in grouped]
    _check_scores(scores, [(q, d) for q, pos, neg in records for d in pos + neg])
    rows = []
    for q, pos, neg in records:
        row = {"query": query_text[q], "pos": [doc_text[p] for p in pos], "neg": [doc_text[n] for n in neg]}
        if scores is not None:
            row |= {"pos_scores": _score_list(scores, q, pos), "neg_scores": _score_list(scores, q, neg)}
        if with_ids:
            row |= {"query_id": q, "pos_ids": pos, "neg_ids": neg, "positive_ids": group.get(q, [])}
        rows.append(row)
    fields = [("query", pa.string()), ("pos", pa.list_(pa.string())), ("neg", pa.list_(pa.string()))]
    if scores is not None:
        fields += [("pos_scores", pa.list_(pa.float64())), ("neg_scores", pa.list_(pa.float64()))]
    if with_ids:
        fields += [("query_id", pa.string()), ("pos_ids", pa.list_(pa.string())), ("neg_ids", pa.list_(pa.string())), ("positive_ids", pa.list_(pa.string()))]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields)), {"rows": len(rows), "queries": len(rows)}


_PASSAGE = [("docid", pa.string()), ("title", pa.string()), ("text", pa.string())]


def tevatron_export(
    negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table, group_ids: bool | None = None, duplicates: pa.Table | None = None,
    scores: Scores | None = None, layout: str = "passages",
) -> tuple[pa.Table, dict]:
    """Tevatron training data, one record per query: ``{"query_id", "query", "positive_passages",
    "negative_passages"}`` (layout ``passages``; with ``scores``, every passage has a ``score``) or
    ``{"query_id", "query_text", "positive_document_ids", "negative_document_ids"}`` (layout ``ids``, read
    with the corpus file of :func:`tevatron_corpus`); unless ``group_ids`` is False, ``positive_ids`` last."""
    if layout not in TEVATRON_LAYOUTS:
        raise BadInputError("--layout", f"unknown tevatron layout {layout!r}; choose from {sorted(TEVATRON_LAYOUTS)}")
    if layout == "ids" and scores is not None:
        raise BadInputError(
            "--scores", "Tevatron's ids layout reads its distillation scores from the corpus, one per document whatever the query; "
            "export the scores with --layout passages, where every passage has its own"
        )
    query_ids, query_text, doc_text, positives = _lookups(queries, corpus, qrels)
    group, with_ids = _positive_ids(qrels, duplicates, doc_text), group_ids is not False  # on by default
    grouped = _grouped(negatives)
    records = [(q, positives.get(q, sorted(grouped[q])), _query_negatives(grouped[q])) for q in query_ids if q in grouped]
    _check_scores(scores, [(q, d) for q, pos, neg in records for d in pos + neg])
    if layout == "ids":
        rows = [{"query_id": q, "query_text": query_text[q], "positive_document_ids": pos, "negative_document_ids": neg} for q, pos, neg in records]
        fields = [("query_id", pa.string()), ("query_text", pa.string()), ("positive_document_ids", pa.list_(pa.string())), ("negative_document_ids", pa.list_(pa.string()))]
    else:
        titles = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("title").to_pylist()))
        texts = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("text").to_pylist()))

        def passage(q, doc_id):
            found = {"docid": doc_id, "title": titles[doc_id] or "", "text": texts[doc_id]}
            return found if scores is None else found | {"score": scores[(q, doc_id)]}

        rows = [
            {"query_id": q, "query": query_text[q], "positive_passages": [passage(q, p) for p in pos], "negative_passages": [passage(q, n) for n in neg]}
            for q, pos, neg in records
        ]
        struct = pa.struct(_PASSAGE + ([("score", pa.float64())] if scores is not None else []))
        fields = [("query_id", pa.string()), ("query", pa.string()), ("positive_passages", pa.list_(struct)), ("negative_passages", pa.list_(struct))]
    if with_ids:
        for row, (q, _, _) in zip(rows, records):
            row["positive_ids"] = group.get(q, [])
        fields.append(("positive_ids", pa.list_(pa.string())))
    return pa.Table.from_pylist(rows, schema=pa.schema(fields)), {"layout": layout, "rows": len(rows), "queries": len(rows)}


def tevatron_corpus(export: pa.Table, corpus: pa.Table) -> pa.Table:
    """The corpus file of a Tevatron ``ids`` export: ``{"docid", "title", "text"}`` for every document it
    names, in the corpus's order."""
    named = {d for column in ("positive_document_ids", "negative_document_ids") for ids in export.column(column).to_pylist() for d in ids}
    kept = corpus.filter(pa.array([d in named for d in corpus.column("doc_id").to_pylist()], pa.bool_()))
    titles = [t or "" for t in kept.column("title").to_pylist()]
    return pa.table({"docid": kept.column("doc_id"), "title": pa.array(titles, pa.string()), "text": kept.column("text")})


EXPORTERS: dict[str, Callable[..., tuple[pa.Table, dict]]] = {
    "sentence-transformers": sentence_transformers_export,
    "flagembedding": flagembedding_export,
    "tevatron": tevatron_export,
}
LAYOUTS = {"sentence-transformers": ST_LAYOUTS, "flagembedding": (), "tevatron": TEVATRON_LAYOUTS}
