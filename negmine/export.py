"""Export the negatives triple table as training files for the libraries that consume hard negatives.

Every exporter is a pure function ``(negatives, queries, corpus, qrels, **options) -> (table, stats)``;
text is joined from ``queries`` and ``corpus`` (the triple table holds ids only, DESIGN.md). Rows follow
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
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

import pyarrow as pa

from negmine.errors import BadInputError

ST_LAYOUTS = ("n-tuple", "triplet", "labeled-pair")


def _lookups(queries: pa.Table, corpus: pa.Table, qrels: pa.Table):
    from negmine.candidates import doc_texts

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
    negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table, layout: str = "n-tuple", num_negatives: int | None = None
) -> tuple[pa.Table, dict]:
    """Columns of ``mine_hard_negatives(output_format=layout)``; ``num_negatives`` (n-tuple) defaults to the widest pair."""
    if layout not in ST_LAYOUTS:
        raise BadInputError("--layout", f"unknown sentence-transformers layout {layout!r}; choose from {sorted(ST_LAYOUTS)}")
    query_ids, query_text, doc_text, _ = _lookups(queries, corpus, qrels)
    grouped = _grouped(negatives)
    pairs = [(q, p, grouped[q][p]) for q in query_ids if q in grouped for p in sorted(grouped[q])]
    stats = {"layout": layout, "pairs": len(pairs), "queries": sum(q in grouped for q in query_ids)}
    if layout == "triplet":
        rows = [(q, p, n) for q, p, negs in pairs for n in negs]
        table = pa.table({
            "anchor": pa.array([query_text[q] for q, _, _ in rows], pa.string()),
            "positive": pa.array([doc_text[p] for _, p, _ in rows], pa.string()),
            "negative": pa.array([doc_text[n] for _, _, n in rows], pa.string()),
        })
    elif layout == "labeled-pair":
        anchors, texts, labels = [], [], []
        for q in query_ids:
            if q not in grouped:
                continue
            for p in sorted(grouped[q]):
                anchors.append(query_text[q]), texts.append(doc_text[p]), labels.append(1)
            for n in _query_negatives(grouped[q]):
                anchors.append(query_text[q]), texts.append(doc_text[n]), labels.append(0)
        table = pa.table({"anchor": pa.array(anchors, pa.string()), "positive": pa.array(texts, pa.string()), "label": pa.array(labels, pa.int64())})
    else:
        width = num_negatives if num_negatives is not None else max((len(negs) for _, _, negs in pairs), default=0)
        if width < 1:
            raise BadInputError("--num-negatives", f"must be at least 1, got {width}")
        kept = [(q, p, negs[:width]) for q, p, negs in pairs if len(negs) >= width]
        stats["pairs_dropped_short"] = len(pairs) - len(kept)
        columns = {
            "anchor": pa.array([query_text[q] for q, _, _ in kept], pa.string()),
            "positive": pa.array([doc_text[p] for _, p, _ in kept], pa.string()),
        }
        for i in range(width):
            columns[f"negative_{i + 1}"] = pa.array([doc_text[negs[i]] for _, _, negs in kept], pa.string())
        table = pa.table(columns)
    stats["rows"] = table.num_rows
    return table, stats


def flagembedding_export(negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table) -> tuple[pa.Table, dict]:
    """FlagEmbedding fine-tuning data: one ``{"query", "pos", "neg"}`` record per query."""
    query_ids, query_text, doc_text, positives = _lookups(queries, corpus, qrels)
    grouped = _grouped(negatives)
    rows = [
        {"query": query_text[q], "pos": [doc_text[p] for p in positives.get(q, sorted(grouped[q]))], "neg": [doc_text[n] for n in _query_negatives(grouped[q])]}
        for q in query_ids
        if q in grouped
    ]
    schema = pa.schema([("query", pa.string()), ("pos", pa.list_(pa.string())), ("neg", pa.list_(pa.string()))])
    return pa.Table.from_pylist(rows, schema=schema), {"rows": len(rows), "queries": len(rows)}


_PASSAGE = pa.struct([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())])


def tevatron_export(negatives: pa.Table, queries: pa.Table, corpus: pa.Table, qrels: pa.Table) -> tuple[pa.Table, dict]:
    """Tevatron training data: ``{"query_id", "query", "positive_passages", "negative_passages"}`` per query."""
    query_ids, query_text, _, positives = _lookups(queries, corpus, qrels)
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
        for q in query_ids
        if q in grouped
    ]
    schema = pa.schema([("query_id", pa.string()), ("query", pa.string()), ("positive_passages", pa.list_(_PASSAGE)), ("negative_passages", pa.list_(_PASSAGE))])
    return pa.Table.from_pylist(rows, schema=schema), {"rows": len(rows), "queries": len(rows)}


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


def export_run(run_dir: str | os.PathLike, strategy: str, fmt: str, out: str | os.PathLike, layout: str = "n-tuple", num_negatives: int | None = None) -> dict:
    """Read the run's tables, build the ``fmt`` export of ``negatives_<strategy>`` and write it to ``out``."""
    from negmine.io import read_table
    from negmine.schemas import CORPUS, NEGATIVES, QRELS, QUERIES

    if fmt not in EXPORTERS:
        raise BadInputError("--format", f"unknown export format {fmt!r}; choose from {sorted(EXPORTERS)}")
    if fmt != "sentence-transformers" and (layout != "n-tuple" or num_negatives is not None):
        raise BadInputError("--layout", f"--layout and --num-negatives apply to --format sentence-transformers only, not {fmt!r}")
    run_dir = Path(run_dir)
    path = run_dir / f"negatives_{strategy}.parquet"
    if not path.exists():
        found = sorted(p.stem.removeprefix("negatives_") for p in run_dir.glob("negatives_*.parquet"))
        raise BadInputError(path, f"no negatives for strategy {strategy!r}; this run has {found}")
    kind = file_format(fmt, out)
    tables = {
        "negatives": read_table(path, NEGATIVES, "negatives"),
        "queries": read_table(run_dir / "queries.parquet", QUERIES, "queries"),
        "corpus": read_table(run_dir / "corpus.parquet", CORPUS, "corpus"),
        "qrels": read_table(run_dir / "qrels.parquet", QRELS, "qrels"),
    }
    options = {"layout": layout, "num_negatives": num_negatives} if fmt == "sentence-transformers" else {}
    table, stats = EXPORTERS[fmt](**tables, **options)
    write_export(table, out, kind)
    return {"format": fmt, "file_format": kind, "strategy": strategy, "out": str(out), **stats}
