"""Reading a pair dataset's rows from a file, a ``save_to_disk`` directory or an in-memory table (negmine.ingest.pairs)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from negmine.errors import BadInputError


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


def load_rows(source: Any) -> PairRows:
    """The rows of a pair file, a ``save_to_disk`` directory or an in-memory table."""
    if not isinstance(source, (str, Path)):
        label = f"<{type(source).__module__.split('.')[0]} {type(source).__name__}>"  # such as "<polars DataFrame>"
        if label.startswith("<pandas ") and hasattr(source, "columns"):
            # Python values, so that a column mixing strings and numbers is reported cell by cell
            columns = {str(name): source[name].tolist() for name in source.columns}
            return PairRows(label, columns, list(range(len(source))), "row")
        return _table_rows(to_arrow(source), label)
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


def to_arrow(data: Any) -> pa.Table:
    """An in-memory dataset as an Arrow table (a ``datasets.Dataset`` with its selection and order applied)."""
    if isinstance(data, pa.Table):
        return data
    module = type(data).__module__.split(".")[0]
    if module == "datasets" and hasattr(data, "keys") and hasattr(data, "values"):  # a DatasetDict
        return to_arrow(_one_split(dict(data), f"<datasets {type(data).__name__}>"))
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
