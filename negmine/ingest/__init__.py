"""Stage 1 — ingest: read a dataset (BEIR, MS MARCO or Parquet) into corpus, queries and qrels tables.

Layouts:
    beir     corpus.jsonl, queries.jsonl, qrels/{split}.tsv           (Thakur et al., NeurIPS 2021)
    msmarco  collection.tsv, queries.{split}.tsv or queries.tsv, qrels.{split}.tsv (TREC: qid 0 pid rel)
    parquet  corpus.parquet, queries.parquet, qrels/{split}.parquet or qrels.parquet

Everything is validated before any table is in place (with ``corpus_file`` the corpus is written
to that temporary file as it is read, and removed if the dataset is invalid): invalid JSON, missing or mistyped fields,
wrong column counts, duplicate ids, empty text, qrels naming unknown queries or documents,
conflicting judgements (one query and document judged twice with different relevance) and
undecodable bytes each raise :class:`BadInputError` naming the file, the line (or row) and the field.
A UTF-8 byte-order mark and CRLF line ends are accepted. A line may be up to ``MAX_LINE_BYTES``
(256 MiB); a longer one is refused without reading it whole. Relevance is an ASCII integer that
fits int32.
Queries without a positive (relevance > 0) in the chosen split are left out and counted.
A judgement repeated word for word (same query, document and relevance) is kept once; the copies
are counted (``qrels_duplicates_collapsed``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from negmine.errors import BadInputError
from negmine.ingest.beir import read_beir
from negmine.ingest.msmarco import read_msmarco
from negmine.ingest.parquet import read_parquet_dataset
from negmine.ingest.records import Dataset, qrels_rows, tsv_rows

__all__ = ["FORMATS", "Dataset", "detect_format", "ingest", "qrels_rows", "read_beir", "read_msmarco", "read_parquet_dataset", "source_files", "tsv_rows"]


FORMATS = ("auto", "beir", "msmarco", "parquet", "pairs")


def detect_format(data: Any) -> str:
    """The layout of ``data``: a pair dataset (a file, a ``save_to_disk`` directory or an in-memory
    table; negmine.ingest.pairs), else a BEIR, MS MARCO or Parquet directory."""
    from negmine.ingest.pairs import is_pair_source

    if is_pair_source(data):
        return "pairs"
    data_dir = Path(data)
    if not data_dir.exists():
        raise BadInputError(data_dir, "data directory does not exist")
    if not data_dir.is_dir():
        raise BadInputError(data_dir, "cannot tell the layout: a pair file is .parquet, .jsonl, .json, .csv or .tsv")
    if (data_dir / "corpus.jsonl").exists():
        return "beir"
    if (data_dir / "collection.tsv").exists():
        return "msmarco"
    if (data_dir / "corpus.parquet").exists():
        return "parquet"
    raise BadInputError(
        data_dir,
        "cannot tell the layout: expected corpus.jsonl (beir), collection.tsv (msmarco), corpus.parquet (parquet), "
        "or a pair dataset (a .parquet/.jsonl/.csv/.tsv file or a datasets save_to_disk directory)",
    )


def source_files(data: Any, fmt: str, split: str = "train", corpus: Any = None) -> list[Path]:
    """The files a layout reads for ``split`` (what the ingest stage's freshness is keyed on); for a
    pair dataset held in memory, none (the ingest stage keys it on its content)."""
    if fmt == "pairs":
        return [path for source in (data, corpus) if isinstance(source, (str, Path)) for path in _pair_files(Path(source))]
    data_dir = Path(data)
    if fmt == "beir":
        files = [data_dir / "corpus.jsonl", data_dir / "queries.jsonl", data_dir / "qrels" / f"{split}.tsv"]
    elif fmt == "msmarco":
        queries = data_dir / f"queries.{split}.tsv"
        files = [data_dir / "collection.tsv", queries if queries.exists() else data_dir / "queries.tsv", data_dir / f"qrels.{split}.tsv"]
    elif fmt == "parquet":
        qrels = data_dir / "qrels" / f"{split}.parquet"
        files = [data_dir / "corpus.parquet", data_dir / "queries.parquet", qrels if qrels.exists() else data_dir / "qrels.parquet"]
    else:
        raise BadInputError("--format", f"unknown value {fmt!r}; choose from {sorted(FORMATS)}")
    for path in files:
        if not path.exists():
            raise BadInputError(path, f"file does not exist (needed by the {fmt} layout, split {split!r})")
    return files


def _pair_files(path: Path) -> list[Path]:
    if not path.exists():
        raise BadInputError(path, "file does not exist")
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


READERS = {"beir": read_beir, "msmarco": read_msmarco, "parquet": read_parquet_dataset}


def ingest(data: Any, fmt: str = "auto", split: str = "train", corpus_file: str | Path | None = None, query_column: str | None = None,
           positive_column: str | None = None, corpus: Any = None) -> Dataset:
    """Read and validate a dataset; return corpus, queries (those with a positive in ``split``) and qrels.

    With ``corpus_file``, the corpus is written there as Parquet while it is read (row groups of
    65,536 documents) and the dataset's corpus is a :class:`~negmine.io.LazyTable` over that file, so
    no corpus is held in memory whatever its size; a corpus that fits one row group gives the bytes
    :func:`negmine.io.write_table` would. The caller owns the file; if the dataset is invalid, or the
    file cannot be written (:class:`~negmine.errors.OutputError` naming it), it is removed and the
    error raised.

    A pair dataset (``fmt='pairs'``; negmine.ingest.pairs) takes ``query_column``, ``positive_column``
    and an extra ``corpus``; it has no splits (every pair is a positive).
    """
    if fmt not in FORMATS:
        raise BadInputError("--format", f"unknown value {fmt!r}; choose from {sorted(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(data)
    if fmt != "pairs" and (query_column or positive_column or corpus is not None):
        raise BadInputError("--query-column" if query_column else "--positive-column" if positive_column else "--corpus",
                            f"applies to pair datasets (--format pairs), not to the {fmt} layout of {data}")
    corpus_file = None if corpus_file is None else Path(corpus_file)
    try:
        if fmt == "pairs":
            from negmine.ingest.pairs import read_pairs
            from negmine.io import write_table
            from negmine.schemas import CORPUS

            dataset = read_pairs(data, query_column, positive_column, corpus)
            if corpus_file is not None:
                write_table(dataset.corpus, corpus_file, CORPUS)
            return dataset
        return READERS[fmt](data, split) if corpus_file is None else READERS[fmt](data, split, corpus_file)
    except BaseException:
        if corpus_file is not None:
            with contextlib.suppress(OSError):
                corpus_file.unlink()
        raise
