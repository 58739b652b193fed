"""``negmine ingest``: read and validate a dataset into corpus, queries and qrels tables."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from negmine.errors import OutputError
from negmine.io import atomic_path, write_table
from negmine.rundir import Run
from negmine.runners.base import StageResult, run_stage, table_path, unless_default
from negmine.schemas import QRELS, QUERIES


def _content_sha256(source: Any) -> str:
    """A pair dataset held in memory (a datasets.Dataset, a DataFrame, an Arrow table) has no file to
    hash: the ingest stage is keyed on the sha256 of its Arrow IPC bytes instead."""
    import pyarrow as pa

    from negmine.ingest.pair_files import to_arrow

    table = to_arrow(source)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def ingest_stage(run: Run, data: Any, format: str = "auto", split: str = "train", query_column: str | None = None, positive_column: str | None = None,
                 corpus: Any = None, force: bool = False) -> StageResult:
    """Read ``data`` (a dataset directory, a pair-dataset file, or a pair dataset held in memory) into
    corpus, queries and qrels (negmine.ingest). ``query_column``, ``positive_column`` and the extra
    ``corpus`` apply to pair datasets (negmine.ingest.pairs)."""
    from negmine import ingest as ingest_mod

    fmt = ingest_mod.detect_format(data) if format == "auto" else format
    inputs = ingest_mod.source_files(data, fmt, split, corpus)
    outputs = [table_path(run, n) for n in ("corpus", "queries", "qrels")]
    config = {"format": fmt, "split": split} | unless_default(query_column=(query_column, None), positive_column=(positive_column, None))
    in_memory = [s for s in (data, corpus) if s is not None and not isinstance(s, (str, Path))]
    if in_memory:
        config["content_sha256"] = [_content_sha256(s) if not isinstance(s, (list, tuple)) else hashlib.sha256("\0".join(s).encode()).hexdigest()
                                    for s in in_memory]

    def compute():
        # the corpus goes to a temporary file as it is read (never held whole), renamed once all is valid;
        # a killed ingest leaves it to clean_temporaries (".corpus.parquet.*.tmp")
        spool = outputs[0].parent / f".{outputs[0].name}.ingest.tmp"
        try:
            try:
                dataset = ingest_mod.ingest(data, fmt, split, corpus_file=spool, query_column=query_column, positive_column=positive_column, corpus=corpus)
            except OutputError as exc:  # the temporary file is ours: the output it stands for is corpus.parquet
                if exc.path != str(spool):
                    raise
                raise OutputError(outputs[0], OSError(exc.errno, os.strerror(exc.errno))) from None
            with atomic_path(outputs[0]) as tmp:
                os.replace(spool, tmp)
        finally:
            spool.unlink(missing_ok=True)
        write_table(dataset.queries, outputs[1], QUERIES)
        write_table(dataset.qrels, outputs[2], QRELS)
        return dataset.stats

    return run_stage(run, "ingest", config, inputs, outputs, compute, force)
