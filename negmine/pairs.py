"""Read a pair dataset (query, positive) into corpus, queries and qrels tables.

This is the layout sentence-transformers and FlagEmbedding users train from: one row per
(query, positive) pair, often with no corpus file and no qrels. Accepted sources:

    a file        .parquet, .jsonl (or .json: JSON lines, or one JSON array of objects), .csv, .tsv
    a directory   written by ``datasets.Dataset.save_to_disk`` (read with pyarrow; the ``datasets``
                  package is not needed). A ``DatasetDict`` is read from its ``train`` split, or
                  from its only split.
    in memory     a ``datasets.Dataset``, a polars or pandas DataFrame, or a ``pyarrow.Table``

CSV and TSV files are UTF-8 (a byte-order mark is accepted) with a header row, quoted as pandas
and the csv module write them.

Columns: unless named (``query_column``, ``positive_column``), the pair is the first of
:data:`PAIR_COLUMNS` the data has (``anchor``/``positive``, ``query``/``answer``,
``question``/``context``, ``sentence1``/``sentence2`` ...). Naming one column picks the other from
the same list. A positive cell may hold a list of texts (FlagEmbedding's ``query``/``pos``): each
is a positive of the row's query. Other columns (``negative``, ``neg``, scores) are ignored.

Ids: where the data has id columns they are kept as they are: ``<query column>_id`` or one of
:data:`QUERY_ID_COLUMNS` for queries, ``<positive column>_id`` or one of :data:`DOC_ID_COLUMNS`
for documents, one of :data:`CORPUS_ID_COLUMNS` in ``corpus``. Otherwise an id is derived from the
text: ``"q"`` (queries) or ``"d"`` (documents) followed by the first 16 hex digits of the SHA-256
of the UTF-8 bytes of the normalised text (Unicode NFC, surrounding whitespace removed; for a
corpus document with a title, ``title + "\\x1f" + text``). So texts that are equal once normalised
are one document (or one query, with the text of its first occurrence), a repeated anchor is one
query with several positives, and the same data gives the same ids on every machine. Every table
lists its rows in order of first appearance: the same input gives the same tables.

``corpus`` adds documents that are no query's positive, the pool negatives can come from: a file
or table in any of the forms above (or a list of strings) with a ``text`` column (or a single
column), an optional ``title`` and an optional id column. A corpus document whose title and text
equal those of a document already read is that document, not a second copy.

Errors (:class:`~negmine.errors.BadInputError`) name the file, the row (0-based, for tables) or
the line (1-based, for JSONL/CSV/TSV) and the column: a missing or unknown column (listing the
columns there are), an empty or non-string cell, a ragged CSV row, one id given to two texts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from negmine.errors import BadInputError
from negmine.schemas import CORPUS, QRELS, QUERIES

PAIR_COLUMNS = (
    ("anchor", "positive"), ("query", "positive"), ("query", "answer"), ("query", "document"),
    ("query", "passage"), ("query", "context"), ("question", "context"), ("question", "answer"),
    ("question", "positive"), ("question", "passage"), ("query", "pos"), ("sentence1", "sentence2"),
    ("sentence_A", "sentence_B"), ("text1", "text2"),
)  # fmt: skip
QUERY_ID_COLUMNS = ("query_id", "anchor_id", "question_id", "qid")
DOC_ID_COLUMNS = ("positive_id", "doc_id", "pos_id", "corpus_id", "passage_id", "pid")
CORPUS_ID_COLUMNS = ("doc_id", "_id", "id", "corpus_id", "pid")
FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".tsv")


@dataclass(frozen=True)
class PairRows:
    """The rows of one source, column by column, with where each row is (for messages)."""

    label: str  # the file, or "<polars DataFrame>" and the like, named in errors
    columns: dict[str, list]
    wheres: list[int]
    unit: str  # "line" (1-based, text files) or "row" (0-based, tables)

    def error(self, index: int, message: str, column: str | None = None) -> BadInputError:
        where = self.wheres[index]
        if self.unit == "line":
            return BadInputError(self.label, message, line=where, field=column)
        return BadInputError(self.label, f"row {where}: {message}", field=column)


def normalise(text: str) -> str:
    """The form of a text its id is derived from: Unicode NFC, surrounding whitespace removed."""
    return unicodedata.normalize("NFC", text).strip()


def _identity(text: str, title: str | None) -> str:
    return normalise(text) if title is None else f"{normalise(title)}\x1f{normalise(text)}"


def text_id(prefix: str, text: str, title: str | None = None) -> str:
    """The id derived from a text: ``prefix`` + the first 16 hex digits of the SHA-256 of its normalised form."""
    return prefix + hashlib.sha256(_identity(text, title).encode("utf-8")).hexdigest()[:16]


def is_pair_source(source: Any) -> bool:
    """Whether ``source`` is a pair dataset rather than a BEIR, MS MARCO or Parquet directory."""
    if not isinstance(source, (str, Path)):
        return True
    path = Path(source)
    if path.is_file():
        return path.suffix.lower() in FILE_SUFFIXES
    return path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json"))


def read_pairs(source: Any, query_column: str | None = None, positive_column: str | None = None, corpus: Any = None):
    """Read a pair dataset (and an optional extra corpus) into a :class:`negmine.ingest.Dataset`.

    Every pair is a judgement of relevance 1; ``stats`` counts pairs, queries, documents and
    where the documents came from.
    """
    from negmine.ingest import Dataset

    rows = load_rows(source)
    query_column, positive_column = pick_columns(rows, query_column, positive_column)
    query_ids = _present(rows, (f"{query_column}_id", *QUERY_ID_COLUMNS), exclude=(query_column, positive_column))
    doc_ids = _present(rows, (f"{positive_column}_id", *DOC_ID_COLUMNS), exclude=(query_column, positive_column, query_ids))
    if not rows.wheres:
        raise BadInputError(rows.label, "no pairs: the dataset has no rows")

    queries, documents = _Texts("q"), _Texts("d")
    qrels: dict[tuple[str, str], None] = {}
    pairs = 0
    for i in range(len(rows.wheres)):
        qid = queries.add(rows, i, _cell(rows, i, query_column), None, _id_cell(rows, i, query_ids))
        for text, given in _positives(rows, i, positive_column, doc_ids):
            qrels.setdefault((qid, documents.add(rows, i, text, None, given)), None)
            pairs += 1
    from_positives = len(documents.order)

    if corpus is not None:
        if isinstance(corpus, (list, tuple)):  # texts, as sentence-transformers takes a corpus
            extra = PairRows("<list>", {"text": list(corpus)}, list(range(len(corpus))), "row")
        else:
            extra = load_rows(corpus)
        text_column = "text" if "text" in extra.columns or len(extra.columns) != 1 else next(iter(extra.columns))
        if text_column not in extra.columns:
            found = list(extra.columns)
            raise BadInputError(extra.label, f"no column 'text' in the corpus; the columns are {found}", field="text")
        id_column = _present(extra, CORPUS_ID_COLUMNS, exclude=(text_column, "title"))
        for i in range(len(extra.wheres)):
            title = _cell(extra, i, "title", required=False) if "title" in extra.columns else None
            text, given = _cell(extra, i, text_column), _id_cell(extra, i, id_column)
            documents.add(extra, i, text, title if title and title.strip() else None, given, merge=True)

    corpus_table = pa.table(
        {"doc_id": documents.order, "title": [documents.titles[d] for d in documents.order],
         "text": [documents.texts[d] for d in documents.order]}, schema=CORPUS)  # fmt: skip
    queries_table = pa.table({"query_id": queries.order, "text": [queries.texts[q] for q in queries.order]}, schema=QUERIES)
    qrels_table = pa.table(
        {"query_id": [q for q, _ in qrels], "doc_id": [d for _, d in qrels], "relevance": [1] * len(qrels)}, schema=QRELS
    )
    per_query = Counter(qid for qid, _ in qrels)
    stats = {
        "format": "pairs",
        "query_column": query_column,
        "positive_column": positive_column,
        "rows": len(rows.wheres),
        "pairs": pairs,
        "duplicate_pairs": pairs - len(qrels),
        "queries_with_positives": queries_table.num_rows,
        "queries_with_several_positives": sum(1 for n in per_query.values() if n > 1),
        "documents": corpus_table.num_rows,
        "documents_from_positives": from_positives,
        "documents_from_corpus": corpus_table.num_rows - from_positives,
        "qrels": qrels_table.num_rows,
        "positives": qrels_table.num_rows,
    }
    return Dataset(corpus_table, queries_table, qrels_table, stats)


class _Texts:
    """Texts by id, in order of first appearance; an id seen again must carry the same text."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.order: list[str] = []
        self.texts: dict[str, str] = {}
        self.titles: dict[str, str | None] = {}
        self.keys: dict[str, str] = {}  # id -> its normalised (title, text), to compare
        self.by_key: dict[str, str] = {}  # normalised (title, text) -> the first id given to it
        self.first: dict[str, tuple[str, str, int]] = {}  # id -> (label, unit, where) of its first row

    def add(self, rows: PairRows, index: int, text: str, title: str | None, given: str | None, merge: bool = False) -> str:
        """The id of this text, recorded if new. With ``merge``, a text already read is that text, whatever ``given`` says."""
        key = _identity(text, title)
        if merge and key in self.by_key:
            return self.by_key[key]
        doc_id = given if given is not None else text_id(self.prefix, text, title)
        if doc_id not in self.keys:
            self.order.append(doc_id)
            self.texts[doc_id], self.titles[doc_id], self.keys[doc_id] = text, title, key
            self.by_key.setdefault(key, doc_id)
            self.first[doc_id] = (rows.label, rows.unit, rows.wheres[index])
        elif self.keys[doc_id] != key:
            label, unit, where = self.first[doc_id]
            seen = f"{unit} {where}" if label == rows.label else f"{label}, {unit} {where}"
            raise rows.error(index, f"id {doc_id!r} was given to another text at {seen}", None)
        return doc_id


def pick_columns(rows: PairRows, query_column: str | None, positive_column: str | None) -> tuple[str, str]:
    """The (query, positive) columns: those named, else the first of :data:`PAIR_COLUMNS` present."""
    for named, option in ((query_column, "query_column"), (positive_column, "positive_column")):
        if named is not None and named not in rows.columns:
            raise BadInputError(rows.label, f"no column {named!r} ({option}); the columns are {list(rows.columns)}", field=named)
    if query_column is not None and positive_column is not None:
        return query_column, positive_column
    for query, positive in PAIR_COLUMNS:
        if query_column not in (None, query) or positive_column not in (None, positive) or query == positive:
            continue
        if query in rows.columns and positive in rows.columns:
            return query, positive
    raise BadInputError(
        rows.label,
        "cannot tell which columns hold the queries and the positives: expected a pair such as "
        f"{', '.join('/'.join(p) for p in PAIR_COLUMNS[:4])} ..., found columns {list(rows.columns)}; "
        "name them with query_column and positive_column",
    )


def _present(rows: PairRows, candidates: tuple[str, ...], exclude: tuple) -> str | None:
    return next((name for name in candidates if name in rows.columns and name not in exclude), None)


def _positives(rows: PairRows, index: int, column: str, id_column: str | None) -> list[tuple[str, str | None]]:
    """(text, id or None) of each positive of a row: its cell, or each item of a list cell (FlagEmbedding's ``pos``)."""
    value = rows.columns[column][index]
    if not isinstance(value, (list, tuple)):
        return [(_cell(rows, index, column), _id_cell(rows, index, id_column))]
    if not value:
        raise rows.error(index, "empty list", column)
    ids = rows.columns[id_column][index] if id_column else [None] * len(value)
    if not isinstance(ids, (list, tuple)) or len(ids) != len(value):
        raise rows.error(index, f"expected a list of {len(value)} ids, one per positive", id_column)
    return [(_cell(rows, index, column, value=text), _id_cell(rows, index, id_column, value=given)) for text, given in zip(value, ids)]


_ROW = object()  # take the value from the row


def _cell(rows: PairRows, index: int, column: str, required: bool = True, value: Any = _ROW) -> str | None:
    value = rows.columns[column][index] if value is _ROW else value
    if value is None or (isinstance(value, float) and math.isnan(value)):  # pandas writes a missing value as NaN
        if required:
            raise rows.error(index, "empty cell", column)
        return None
    if not isinstance(value, str):
        raise rows.error(index, f"expected a string, found {type(value).__name__} {str(value)[:40]!r}", column)
    if required and not value.strip():
        raise rows.error(index, "empty cell", column)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON escapes can spell unpaired surrogates
        raise rows.error(index, f"not valid Unicode ({exc.reason} at character {exc.start})", column) from None
    return value


def _id_cell(rows: PairRows, index: int, column: str | None, value: Any = _ROW) -> str | None:
    if column is None:
        return None
    value = rows.columns[column][index] if value is _ROW else value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise rows.error(index, f"an id must be a string or an integer, found {type(value).__name__}", column)
    value = str(value).strip()
    if not value:
        raise rows.error(index, "empty id", column)
    return value


def load_rows(source: Any) -> PairRows:
    """The rows of a pair file, a ``save_to_disk`` directory or an in-memory table."""
    if not isinstance(source, (str, Path)):
        label = f"<{type(source).__module__.split('.')[0]} {type(source).__name__}>"  # such as "<polars DataFrame>"
        if label.startswith("<pandas ") and hasattr(source, "columns"):
            # Python values, so that a column mixing strings and numbers is reported cell by cell
            columns = {str(name): source[name].tolist() for name in source.columns}
            return PairRows(label, columns, list(range(len(source))), "row")
        return _table_rows(_to_arrow(source), label)
    path = Path(source)
    if not path.exists():
        raise BadInputError(path, "file does not exist")
    if path.is_dir():
        return _table_rows(_load_from_disk(path), str(path))
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            return _table_rows(pq.read_table(path), str(path))
        except (pa.ArrowException, OSError) as exc:
            raise BadInputError(path, f"not a readable Parquet file ({exc})") from None
    if suffix in (".jsonl", ".json"):
        return _json_rows(path)
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    expected = f"expected one of {list(FILE_SUFFIXES)} or a save_to_disk directory"
    raise BadInputError(path, f"cannot read pairs from a {suffix or 'suffix-less'} file: {expected}")


def _to_arrow(data: Any) -> pa.Table:
    """An in-memory dataset as an Arrow table (a ``datasets.Dataset`` with its selection and order applied)."""
    if isinstance(data, pa.Table):
        return data
    module = type(data).__module__.split(".")[0]
    if module == "datasets" and hasattr(data, "keys") and hasattr(data, "values"):  # a DatasetDict
        return _to_arrow(_one_split(dict(data), f"<datasets {type(data).__name__}>"))
    if module == "datasets" and hasattr(data, "with_format"):
        return data.with_format("arrow")[:]
    if hasattr(data, "to_arrow"):  # polars, and anything else that offers Arrow
        return data.to_arrow()
    expected = "expected a file, a datasets.Dataset, a polars or pandas DataFrame, or a pyarrow.Table"
    raise BadInputError(f"<{type(data).__name__}>", expected)


def _one_split(splits: dict, label: str) -> Any:
    if "train" in splits:
        return splits["train"]
    if len(splits) == 1:
        return next(iter(splits.values()))
    raise BadInputError(label, f"a DatasetDict with splits {sorted(splits)} and no 'train': pass the split to read")


def _load_from_disk(path: Path) -> pa.Table:
    """The table of a ``save_to_disk`` directory: its Arrow stream shards, in the order ``state.json`` lists them."""
    if (path / "dataset_dict.json").is_file():
        splits = _read_json(path / "dataset_dict.json").get("splits", [])
        return _load_from_disk(path / _one_split({str(s): s for s in splits}, str(path)))
    state_path = path / "state.json"
    if not state_path.is_file():
        raise BadInputError(path, "not a directory written by datasets' save_to_disk (no state.json or dataset_dict.json)")
    tables = []
    for entry in _read_json(state_path).get("_data_files", []):
        shard = path / str(entry.get("filename", ""))
        try:
            with pa.memory_map(str(shard)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        except (pa.ArrowException, OSError) as exc:
            raise BadInputError(shard, f"not a readable Arrow file ({exc})") from None
    if not tables:
        raise BadInputError(state_path, "lists no data files")
    try:
        return pa.concat_tables(tables)
    except pa.ArrowException as exc:
        raise BadInputError(path, f"shards with different columns ({exc})") from None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BadInputError(path, f"expected a JSON object, found {type(value).__name__}")
    return value


def _table_rows(table: pa.Table, label: str) -> PairRows:
    if len(set(table.column_names)) != len(table.column_names):
        raise BadInputError(label, f"repeated column names in {table.column_names}")
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    return PairRows(label, columns, list(range(table.num_rows)), "row")


def _decode(path: Path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped); undecodable bytes raise naming their line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise BadInputError(path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line=line) from None


def _json_rows(path: Path) -> PairRows:
    text = _decode(path)
    if text.lstrip().startswith("["):  # one JSON array of objects
        try:
            records = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadInputError(path, f"invalid JSON ({str(exc)[:200]})") from None
        numbered = list(enumerate(records))
        unit = "row"
    else:
        numbered, unit = [], "line"
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((number, json.loads(line)))
            except (ValueError, RecursionError) as exc:
                raise BadInputError(path, f"invalid JSON ({str(exc)[:200]})", line=number) from None
    names: dict[str, None] = {}
    for where, record in numbered:
        if not isinstance(record, dict):
            message = f"expected a JSON object, found {type(record).__name__}"
            raise BadInputError(path, message, line=where) if unit == "line" else BadInputError(path, f"row {where}: {message}")
        names.update(dict.fromkeys(record))
    columns = {name: [record.get(name) for _, record in numbered] for name in names}
    return PairRows(str(path), columns, [where for where, _ in numbered], unit)


def _csv_rows(path: Path, delimiter: str) -> PairRows:
    """A CSV/TSV file with a header row; each row is numbered by the line it starts on."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # passages longer than 128 KiB are ordinary
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    header: list[str] | None = None
    columns: list[list[str]] = []
    wheres: list[int] = []
    for start, record in _records(reader, path):
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # a blank line
        if header is None:
            header = [name.strip() for name in record]
            if len(set(header)) != len(header):
                raise BadInputError(path, f"repeated column names in the header {header}", line=start)
            columns = [[] for _ in header]
            continue
        if len(record) != len(header):
            message = f"expected {len(header)} columns {header}, found {len(record)}: a ragged row (a stray quote or delimiter?)"
            raise BadInputError(path, message, line=start)
        for column, value in zip(columns, record):
            column.append(value)
        wheres.append(start)
    if header is None:
        raise BadInputError(path, "empty file: expected a header row, then one row per pair")
    return PairRows(str(path), dict(zip(header, columns)), wheres, "line")


def _records(reader: Any, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(the line a record starts on, the record) for each record ``reader`` parses."""
    start = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BadInputError(path, f"malformed CSV ({exc})", line=start) from None
        yield start, record
        start = reader.line_num + 1
