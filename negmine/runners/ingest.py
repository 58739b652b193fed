"""``negmine ingest``: read and validate a dataset into corpus, queries and qrels tables."""

from __future__ import annotations

import os
from pathlib import Path

from negmine.errors import OutputError
from negmine.io import atomic_path, write_table
from negmine.rundir import Run
from negmine.runners.base import (
    StageResult,
    run_stage,
    table_path,
)
from negmine.schemas import QRELS, QUERIES


def ingest_stage(run: Run, data_dir: str | Path, format: str = "auto", split: str = "train", force: bool = False) -> StageResult:
    from negmine import ingest as ingest_mod

    fmt = format

    fmt_resolved = ingest_mod.detect_format(data_dir) if fmt == "auto" else fmt
    inputs = ingest_mod.source_files(data_dir, fmt_resolved, split)
    outputs = [table_path(run, n) for n in ("corpus", "queries", "qrels")]
    config = {"format": fmt_resolved, "split": split}

    def compute():
        # the corpus goes to a temporary file as it is read (never held whole), renamed once all is valid;
        # a killed ingest leaves it to clean_temporaries (".corpus.parquet.*.tmp")
        spool = outputs[0].parent / f".{outputs[0].name}.ingest.tmp"
        try:
            try:
                dataset = ingest_mod.ingest(data_dir, fmt_resolved, split, corpus_file=spool)
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
