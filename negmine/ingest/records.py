"""What every dataset reader shares: validated lines and records, id collectors, qrels, the assembled Dataset."""

from __future__ import annotations

import json
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from negmine.errors import BadInputError
from negmine.io import PARQUET_OPTIONS, LazyTable, output_errors
from negmine.schemas import QRELS, QUERIES


MAX_LINE_BYTES = 256 * 2**20


_INT = re.compile(r"[+-]?[0-9]+")


_INT32 = (-(2**31), 2**31 - 1)


@dataclass
class Dataset:
    corpus: pa.Table
    queries: pa.Table
    qrels: pa.Table
    stats: dict = field(default_factory=dict)


def lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its end) for non-blank lines; BOM and CRLF tolerated."""
    if not path.exists():
        raise BadInputError(path, "file does not exist")
    if path.is_dir():
        raise BadInputError(path, "expected a file, found a directory")
    with open(path, "rb") as fh:
        number = 0
        while raw := fh.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise BadInputError(path, f"line longer than {MAX_LINE_BYTES} bytes (MAX_LINE_BYTES); is this the right file?", line=number)
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInputError(path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line=number) from None
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def check_text(path: Path, value: str, line: int, field_name: str) -> str:
    """JSON escapes can spell unpaired surrogates (``"\\ud800"``), which no UTF-8 table can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInputError(path, f"not valid Unicode ({exc.reason} at character {exc.start})", line=line, field=field_name) from None
    return value


def json_records(path: Path, id_field: str, fields: dict[str, bool]) -> Iterator[tuple[int, dict]]:
    """Parse JSON lines; ``fields`` maps a field name to whether it is required."""
    for number, line in lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(path, f"invalid JSON ({exc.msg} at column {exc.colno})", line=number) from None
        except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits, nesting too deep
            raise BadInputError(path, f"invalid JSON ({str(exc)[:200]})", line=number) from None
        if not isinstance(record, dict):
            raise BadInputError(path, f"expected a JSON object, found {type(record).__name__}", line=number)
        doc_id = record.get(id_field)
        if doc_id is None:
            raise BadInputError(path, "missing id", line=number, field=id_field)
        if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
            raise BadInputError(path, f"id must be a string or integer, found {type(doc_id).__name__}", line=number, field=id_field)
        out = {"id": check_text(path, str(doc_id), number, id_field)}
        for name, required in fields.items():
            value = record.get(name)
            if value is None:
                if required:
                    raise BadInputError(path, "missing field", line=number, field=name)
                out[name] = None
                continue
            if not isinstance(value, str):
                raise BadInputError(path, f"expected a string, found {type(value).__name__}", line=number, field=name)
            out[name] = check_text(path, value, number, name)
        yield number, out


def tsv_rows(path: Path, columns: int, skip_header: str | None = None) -> Iterator[tuple[int, list[str]]]:
    for number, line in lines(path):
        parts = line.split("\t")
        if skip_header is not None and number == 1 and parts[0].strip() == skip_header:
            continue
        if len(parts) != columns:
            raise BadInputError(path, f"expected {columns} tab-separated columns, found {len(parts)}", line=number)
        yield number, parts


class Collector:
    """Accumulates rows of one table, rejecting duplicate ids and empty text with their location.

    With a ``schema`` (id column first), every :attr:`BATCH_ROWS` rows become an Arrow record batch and
    :meth:`table` joins them: a 1,000,000-document corpus is never a million Python strings at once.
    With a ``sink`` as well, each batch is written there as a Parquet row group instead of kept, and
    :meth:`table` is a :class:`~negmine.io.LazyTable` over the file: the table is never held at all.
    Without a schema, the rows stay in :attr:`ids` and :attr:`columns`.

    Ids are checked for repeats by :meth:`finish`, once the whole file is read, on an Arrow array of
    them (with each row's line or row number in a compact array, for the message): a Python dict holds a
    string object and a hash-table slot per id, an Arrow column only the bytes and an offset. So within one file, a repeated id
    is reported after the errors that stop the reading (a malformed line further on), not before.
    """

    BATCH_ROWS = 1 << 16  # a corpus up to this size is one chunk, as a single pa.table() would make it

    def __init__(self, path: Path, id_field: str, unit: str = "line", schema: pa.Schema | None = None, sink: Path | None = None):
        self.path, self.id_field, self.unit, self.schema, self.sink = path, id_field, unit, schema, sink
        self.ids: list[str] = []
        self.columns: dict[str, list] = {}
        self.rows = 0
        self.wheres = array("q")  # each row's line (or row) in its file
        self.id_chunks: list[pa.Array] = []  # the ids of the rows already in batches
        self.all_ids: pa.Array | None = None  # every id, in order, once :meth:`finish` has checked them
        self.batches: list[pa.RecordBatch] = []
        self.writer: pq.ParquetWriter | None = None

    def add(self, where: int, doc_id: str, **values) -> None:
        if not doc_id.strip():
            raise self._error(where, "empty id", self.id_field)
        text, title = values.get("text"), values.get("title")
        if not (text or "").strip() and not (title or "").strip():
            raise self._error(where, f"empty text for id {doc_id!r}", "text")
        self.wheres.append(where)
        self.ids.append(doc_id)
        for key, value in values.items():
            self.columns.setdefault(key, []).append(value)
        self.rows += 1
        if self.schema is not None and len(self.ids) >= self.BATCH_ROWS:
            self._flush()

    def finish(self) -> None:
        """After the last row: the first id that repeats an earlier one raises (with both locations)."""
        if self.schema is not None:
            self._flush()
        ids = pa.concat_arrays([*self.id_chunks, pa.array(self.ids, pa.string())])
        if pc.count_distinct(ids).as_py() != len(ids):
            first = pc.index_in(ids, value_set=ids).to_numpy()
            row = int(np.flatnonzero(first != np.arange(len(ids)))[0])
            seen = self.wheres[int(first[row])]
            raise self._error(self.wheres[row], f"duplicate id {ids[row].as_py()!r} (first seen at {self.unit} {seen})", self.id_field)
        self.all_ids, self.id_chunks = ids, []

    def _flush(self) -> None:
        if self.ids:
            data = {self.schema.names[0]: self.ids, **self.columns}
            batch = pa.RecordBatch.from_pydict({name: data[name] for name in self.schema.names}, schema=self.schema)
            self.id_chunks.append(batch.column(0))
            if self.sink is None:
                self.batches.append(batch)
            else:
                with output_errors(self.sink):
                    self._writer().write_batch(batch)
            self.ids, self.columns = [], {}

    def _writer(self) -> pq.ParquetWriter:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.sink, self.schema, **PARQUET_OPTIONS)
        return self.writer

    def table(self) -> "pa.Table | LazyTable":
        """The rows added, as a table of ``schema`` (with a ``sink``: the file written, read lazily)."""
        self._flush()
        if self.sink is None:
            return pa.Table.from_batches(self.batches, schema=self.schema)
        with output_errors(self.sink):
            self._writer().close()
        return LazyTable(self.sink, self.schema, "corpus")

    def _error(self, where: int, message: str, field_name: str) -> BadInputError:
        if self.unit == "line":
            return BadInputError(self.path, message, line=where, field=field_name)
        return BadInputError(self.path, f"row {where}: {message}", field=field_name)


def qrels_rows(rows: Iterator[tuple[int, str, str, str]], path: Path, unit: str) -> dict[str, list]:
    out: dict[str, list] = {"query_id": [], "doc_id": [], "relevance": [], "where": []}
    for where, qid, did, rel in rows:
        location = {"line": where} if unit == "line" else {}
        prefix = "" if unit == "line" else f"row {where}: "
        text = rel.strip()
        shown = rel if len(rel) <= 40 else rel[:40] + "…"
        if not _INT.fullmatch(text):
            raise BadInputError(path, f"{prefix}relevance must be an integer, found {shown!r}", field="relevance", **location)
        relevance = int(text) if len(text) <= 12 else _INT32[1] + 1
        if not _INT32[0] <= relevance <= _INT32[1]:
            raise BadInputError(path, f"{prefix}relevance {shown} does not fit int32", field="relevance", **location)
        out["query_id"].append(qid.strip())
        out["doc_id"].append(did.strip())
        out["relevance"].append(relevance)
        out["where"].append(where)
    return out


def known(values: list[str], ids: pa.Array) -> np.ndarray:
    """Whether each value is one of ``ids`` (a bool per value)."""
    return pc.is_in(pa.array(values, pa.string()), value_set=ids).to_numpy(zero_copy_only=False)


def assemble(corpus: Collector, queries: Collector, qrels: dict, qrels_path: Path, unit: str, split: str) -> Dataset:
    if not corpus.rows:
        raise BadInputError(corpus.path, "corpus is empty")
    if not qrels["query_id"]:
        raise BadInputError(qrels_path, f"no judgements in split {split!r}")
    known_query = known(qrels["query_id"], queries.all_ids)
    known_doc = known(qrels["doc_id"], corpus.all_ids)
    seen_pairs: dict[tuple[str, str], tuple[int, int]] = {}  # (query, doc) -> (where, relevance) of its first judgement
    copies = set()  # rows repeating an earlier judgement word for word: collapsed into it
    for i, (qid, did, rel, where) in enumerate(zip(qrels["query_id"], qrels["doc_id"], qrels["relevance"], qrels["where"])):
        location = {"line": where} if unit == "line" else {}
        prefix = "" if unit == "line" else f"row {where}: "
        if not known_query[i]:
            raise BadInputError(qrels_path, f"{prefix}unknown query {qid!r} (not in {queries.path.name})", field="query-id" if unit == "line" else "query_id", **location)
        if not known_doc[i]:
            raise BadInputError(qrels_path, f"{prefix}unknown document {did!r} (not in {corpus.path.name})", field="corpus-id" if unit == "line" else "doc_id", **location)
        if (qid, did) in seen_pairs:
            first, first_rel = seen_pairs[(qid, did)]
            if rel != first_rel:
                raise BadInputError(
                    qrels_path, f"{prefix}conflicting judgements for ({qid!r}, {did!r}): relevance {rel} at {unit} {where}, relevance {first_rel} at {unit} {first}", **location
                )
            copies.add(i)
            continue
        seen_pairs[(qid, did)] = (where, rel)
    with_positive = {q for q, r in zip(qrels["query_id"], qrels["relevance"]) if r > 0}
    kept = [i for i, qid in enumerate(queries.ids) if qid in with_positive]
    judged = set(qrels["query_id"])
    corpus_table = corpus.table()
    queries_table = pa.table(
        {"query_id": [queries.ids[i] for i in kept], "text": [queries.columns["text"][i] for i in kept]}, schema=QUERIES
    )
    keep_q = set(queries_table.column("query_id").to_pylist())
    mask = [q in keep_q and i not in copies for i, q in enumerate(qrels["query_id"])]
    qrels_table = pa.table(
        {k: [v for v, m in zip(qrels[k], mask) if m] for k in ("query_id", "doc_id", "relevance")}, schema=QRELS
    )
    stats = {
        "split": split,
        "documents": corpus_table.num_rows,
        "queries_in_file": len(queries.ids),
        "queries_with_positives": queries_table.num_rows,
        "queries_judged_without_positive": len(judged - with_positive),
        "queries_not_in_split": len(queries.ids) - len(judged),
        "qrels": qrels_table.num_rows,
        "qrels_duplicates_collapsed": len(copies),
        "positives": sum(1 for r in qrels_table.column("relevance").to_pylist() if r > 0),
    }
    return Dataset(corpus_table, queries_table, qrels_table, stats)
