"""Export the negatives triple table as training files for the libraries that consume hard negatives.

Every exporter is a pure function ``(negatives, queries, corpus, qrels, **options) -> (table, stats)``;
text is joined from ``queries`` and ``corpus`` (the triple table holds ids only, docs/data-contract.md). Rows follow
the order of the queries table, then positive id, then ``neg_rank``, so the same run exports the same bytes.

Formats (``EXPORTERS``):

- ``sentence-transformers`` — the layouts of ``sentence_transformers.util.mine_hard_negatives``
  (``output_format``), ready for ``SentenceTransformerTrainer``:
  ``n-tuple`` (anchor, positive, negative_1..negative_n; one row per (query, positive), pairs with fewer
  than n negatives are dropped and counted), ``triplet`` (anchor, positive, negative; one row per negative)
  and ``labeled-pair`` (anchor, positive, label; 1 for each positive, 0 for each distinct negative of the query).
- ``flagembedding`` — FlagEmbedding's fine-tuning JSONL: ``{"query", "pos": [...], "neg": [...]}``, one line per query.
- ``tevatron`` — Tevatron's training JSONL: ``{"query_id", "query", "positive_passages", "negative_passages"}``
  with passages ``{"docid", "title", "text"}``, one line per query.

Documents are ``title + " " + text`` (as the retrievers and the trainer saw them) except in Tevatron,
which keeps the title apart.

Group ids (``group_ids``), so that another trainer can mask in-batch false negatives as ``negmine train``
does (negmine.train.collisions): every row gets the ids of its texts and its query's positive group, appended
after the existing fields (which stay as they are) in this order:

1. ``query_id`` — the query of the row (Tevatron records have it already, in the first place);
2. the document ids, cell by cell — sentence-transformers: ``pos_id``, ``neg_id_1..n`` (n-tuple; the ids
   of ``positive``, ``negative_1..n``), ``pos_id``, ``neg_id`` (triplet), ``doc_id`` (labeled-pair; the
   id of ``positive``, whatever its label); FlagEmbedding: ``pos_ids``, ``neg_ids`` (the ids of ``pos``
   and ``neg``, in their order); Tevatron: none, the passages' ``docid`` are the ids;
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

import json
import os
import sys
from pathlib import Path
from typing import Callable

import pyarrow as pa

from negmine.errors import BadInputError
from negmine.names import check_name

ST_LAYOUTS = ("n-tuple", "triplet", "labeled-pair")


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


def sentence_transformers_export(
    negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table, layout: str = "n-tuple", num_negatives: int | None = None,
    group_ids: bool | None = None, duplicates: pa.Table | None = None,
) -> tuple[pa.Table, dict]:
    """Columns of ``mine_hard_negatives(output_format=layout)``; ``num_negatives`` (n-tuple) defaults to the widest pair.

    With ``group_ids`` (off by default: the trainer would read extra columns as texts), the id columns of
    the module docstring follow the text columns.
    """
    if layout not in ST_LAYOUTS:
        raise BadInputError("--layout", f"unknown sentence-transformers layout {layout!r}; choose from {sorted(ST_LAYOUTS)}")
    query_ids, query_text, doc_text, _ = _lookups(queries, corpus, qrels)
    grouped = _grouped(negatives)
    pairs = [(q, p, grouped[q][p]) for q in query_ids if q in grouped for p in sorted(grouped[q])]
    stats = {"layout": layout, "pairs": len(pairs), "queries": sum(q in grouped for q in query_ids)}
    if layout == "triplet":
        rows = [(q, p, n) for q, p, negs in pairs for n in negs]
        columns = {
            "anchor": pa.array([query_text[q] for q, _, _ in rows], pa.string()),
            "positive": pa.array([doc_text[p] for _, p, _ in rows], pa.string()),
            "negative": pa.array([doc_text[n] for _, _, n in rows], pa.string()),
        }
        ids = {"pos_id": [p for _, p, _ in rows], "neg_id": [n for _, _, n in rows]}
    elif layout == "labeled-pair":
        rows = [
            (q, d, label)
            for q in query_ids
            if q in grouped
            for d, label in [(p, 1) for p in sorted(grouped[q])] + [(n, 0) for n in _query_negatives(grouped[q])]
        ]
        columns = {
            "anchor": pa.array([query_text[q] for q, _, _ in rows], pa.string()),
            "positive": pa.array([doc_text[d] for _, d, _ in rows], pa.string()),
            "label": pa.array([label for _, _, label in rows], pa.int64()),
        }
        ids = {"doc_id": [d for _, d, _ in rows]}
    else:
        width = num_negatives if num_negatives is not None else max((len(negs) for _, _, negs in pairs), default=0)
        if width < 1:
            raise BadInputError("--num-negatives", f"must be at least 1, got {width}")
        rows = [(q, p, negs[:width]) for q, p, negs in pairs if len(negs) >= width]
        stats["pairs_dropped_short"] = len(pairs) - len(rows)
        columns = {
            "anchor": pa.array([query_text[q] for q, _, _ in rows], pa.string()),
            "positive": pa.array([doc_text[p] for _, p, _ in rows], pa.string()),
        }
        for i in range(width):
            columns[f"negative_{i + 1}"] = pa.array([doc_text[negs[i]] for _, _, negs in rows], pa.string())
        ids = {"pos_id": [p for _, p, _ in rows]} | {f"neg_id_{i + 1}": [negs[i] for _, _, negs in rows] for i in range(width)}
    if group_ids:
        group = _positive_ids(qrels, duplicates, doc_text)
        columns["query_id"] = pa.array([q for q, _, _ in rows], pa.string())
        columns |= {k: pa.array(v, pa.string()) for k, v in ids.items()}
        columns["positive_ids"] = pa.array([group.get(q, []) for q, _, _ in rows], pa.list_(pa.string()))
    table = pa.table(columns)
    stats["rows"] = table.num_rows
    return table, stats


def flagembedding_export(
    negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table, group_ids: bool | None = None, duplicates: pa.Table | None = None
) -> tuple[pa.Table, dict]:
    """FlagEmbedding fine-tuning data: one ``{"query", "pos", "neg"}`` record per query, and unless
    ``group_ids`` is False, ``{"query_id", "pos_ids", "neg_ids", "positive_ids"}`` after them."""
    query_ids, query_text, doc_text, positives = _lookups(queries, corpus, qrels)
    grouped = _grouped(negatives)
    group, with_ids = _positive_ids(qrels, duplicates, doc_text), group_ids is not False  # on by default
    rows = []
    for q in query_ids:
        if q not in grouped:
            continue
        pos, neg = positives.get(q, sorted(grouped[q])), _query_negatives(grouped[q])
        row = {"query": query_text[q], "pos": [doc_text[p] for p in pos], "neg": [doc_text[n] for n in neg]}
        if with_ids:
            row |= {"query_id": q, "pos_ids": pos, "neg_ids": neg, "positive_ids": group.get(q, [])}
        rows.append(row)
    fields = [("query", pa.string()), ("pos", pa.list_(pa.string())), ("neg", pa.list_(pa.string()))]
    if with_ids:
        fields += [("query_id", pa.string()), ("pos_ids", pa.list_(pa.string())), ("neg_ids", pa.list_(pa.string())), ("positive_ids", pa.list_(pa.string()))]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields)), {"rows": len(rows), "queries": len(rows)}


_PASSAGE = pa.struct([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())])


def tevatron_export(
    negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table, group_ids: bool | None = None, duplicates: pa.Table | None = None
) -> tuple[pa.Table, dict]:
    """Tevatron training data: ``{"query_id", "query", "positive_passages", "negative_passages"}`` per query,
    and unless ``group_ids`` is False, ``positive_ids`` after them."""
    query_ids, query_text, doc_text, positives = _lookups(queries, corpus, qrels)
    group, with_ids = _positive_ids(qrels, duplicates, doc_text), group_ids is not False  # on by default
    grouped = _grouped(negatives)
    titles = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("title").to_pylist()))
    texts = dict(zip(corpus.column("doc_id").to_pylist(), corpus.column("text").to_pylist()))

    def passage(doc_id):
        return {"docid": doc_id, "title": titles[doc_id] or "", "text": texts[doc_id]}

    rows = [
        {
            "query_id": q,
            "query": query_text[q],
            "positive_passages": [passage(p) for p in positives.get(q, sorted(grouped[q]))],
            "negative_passages": [passage(n) for n in _query_negatives(grouped[q])],
        }
        | ({"positive_ids": group.get(q, [])} if with_ids else {})
        for q in query_ids
        if q in grouped
    ]
    fields = [("query_id", pa.string()), ("query", pa.string()), ("positive_passages", pa.list_(_PASSAGE)), ("negative_passages", pa.list_(_PASSAGE))]
    if with_ids:
        fields.append(("positive_ids", pa.list_(pa.string())))
    return pa.Table.from_pylist(rows, schema=pa.schema(fields)), {"rows": len(rows), "queries": len(rows)}


EXPORTERS: dict[str, Callable[..., tuple[pa.Table, dict]]] = {
    "sentence-transformers": sentence_transformers_export,
    "flagembedding": flagembedding_export,
    "tevatron": tevatron_export,
}


def file_format(fmt: str, out: str | os.PathLike) -> str:
    """``parquet`` for a sentence-transformers export to ``*.parquet``; JSONL otherwise (and on stdout)."""
    if str(out) != "-" and Path(out).suffix == ".parquet":
        if fmt != "sentence-transformers":
            raise BadInputError(out, f"format {fmt!r} is JSONL only; name the file *.jsonl")
        return "parquet"
    return "jsonl"


def jsonl_lines(table: pa.Table):
    for row in table.to_pylist():
        yield json.dumps(row, ensure_ascii=False) + "\n"


def write_export(table: pa.Table, out: str | os.PathLike, kind: str) -> None:
    """Write atomically to ``out`` (Parquet or JSONL), or stream JSONL to stdout when ``out`` is ``-``.

    On stdout a closed pipe (``negmine export … --out - | head``) ends the export quietly.
    """
    if str(out) == "-":
        try:
            for line in jsonl_lines(table):
                sys.stdout.write(line)
            sys.stdout.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return
    from negmine.io import atomic_path

    with atomic_path(out) as tmp:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(jsonl_lines(table))


def export_run(
    run_dir: str | os.PathLike, strategy: str | None, fmt: str, out: str | os.PathLike, layout: str = "n-tuple", num_negatives: int | None = None,
    group_ids: bool | None = None,
) -> dict:
    """Read the run's tables, build the ``fmt`` export of ``negatives_<strategy>`` and write it to ``out``.

    ``strategy`` None: the run's only negatives table (bad input when it has several or none).

    ``group_ids``: None (the format's default), True or False; the positive groups take the run's
    ``duplicates.parquet`` in when it has one.
    """
    from negmine.io import read_table
    from negmine.schemas import CORPUS, DUPLICATES, NEGATIVES, QRELS, QUERIES

    if fmt not in EXPORTERS:
        raise BadInputError("--format", f"unknown export format {fmt!r}; choose from {sorted(EXPORTERS)}")
    if fmt != "sentence-transformers" and (layout != "n-tuple" or num_negatives is not None):
        raise BadInputError("--layout", f"--layout and --num-negatives apply to --format sentence-transformers only, not {fmt!r}")
    run_dir = Path(run_dir)
    found = sorted(p.stem.removeprefix("negatives_") for p in run_dir.glob("negatives_*.parquet"))
    if strategy is None:  # the run's only negatives table
        if len(found) != 1:
            raise BadInputError("--strategy", f"{run_dir} holds {len(found)} negatives tables {found}; name one")
        strategy = found[0]
    check_name(strategy, "--strategy")
    path = run_dir / f"negatives_{strategy}.parquet"
    if not path.exists():
        raise BadInputError(path, f"no negatives for strategy {strategy!r}; this run has {found}")
    kind = file_format(fmt, out)
    tables = {
        "negatives": read_table(path, NEGATIVES, "negatives"),
        "queries": read_table(run_dir / "queries.parquet", QUERIES, "queries"),
        "corpus": read_table(run_dir / "corpus.parquet", CORPUS, "corpus"),
        "qrels": read_table(run_dir / "qrels.parquet", QRELS, "qrels"),
    }
    options = {"layout": layout, "num_negatives": num_negatives} if fmt == "sentence-transformers" else {}
    with_ids = group_ids if group_ids is not None else fmt != "sentence-transformers"
    duplicates_path = run_dir / "duplicates.parquet"
    if with_ids and duplicates_path.exists():
        options["duplicates"] = read_table(duplicates_path, DUPLICATES, "duplicates")
    table, stats = EXPORTERS[fmt](**tables, **options, group_ids=with_ids)
    write_export(table, out, kind)
    return {"format": fmt, "file_format": kind, "strategy": strategy, "out": str(out), "group_ids": with_ids, **stats}
