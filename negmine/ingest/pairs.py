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

import hashlib
import math
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from negmine.errors import BadInputError
from negmine.schemas import CORPUS, QRELS, QUERIES

from negmine.ingest.pair_files import FILE_SUFFIXES, PairRows, load_rows


PAIR_COLUMNS = (
    ("anchor", "positive"), ("query", "positive"), ("query", "answer"), ("query", "document"),
    ("query", "passage"), ("query", "context"), ("question", "context"), ("question", "answer"),
    ("question", "positive"), ("question", "passage"), ("query", "pos"), ("sentence1", "sentence2"),
    ("sentence_A", "sentence_B"), ("text1", "text2"),
)  # fmt: skip


QUERY_ID_COLUMNS = ("query_id", "anchor_id", "question_id", "qid")


DOC_ID_COLUMNS = ("positive_id", "doc_id", "pos_id", "corpus_id", "passage_id", "pid")


CORPUS_ID_COLUMNS = ("doc_id", "_id", "id", "corpus_id", "pid")


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
    from negmine.ingest.records import Dataset

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
