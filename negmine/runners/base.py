"""What every stage runner shares: the skip-when-fresh rule, the manifest record, table paths, config helpers.

A runner reads a run's tables, calls one library function, writes its outputs and records them in the
manifest. It skips its work when the manifest says config and inputs are unchanged and the outputs
are intact (docs/data-contract.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from negmine.io import release_unused_memory
from negmine.progress import stage as progress_stage
from negmine.retrieve.embed import EMBED_CHUNK  # noqa: F401  (re-exported: the runners' default)
from negmine.rundir import Run, measure

SOURCES = ("bm25", "dense", "hybrid")  # hybrid: the bm25 and dense pools fused (hybrid_stage)


# --engine of dense and rescore: in this process, or on a Ray cluster (negmine.engines.ray). Both write
# identical bytes (tests/test_engine_ray.py), so the engine is left out of the stages' configs: a run made
# by one engine is up to date for the other, and switching engines never recomputes anything.
ENGINES = ("local", "ray")


DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


QUERY_BATCH = 4096  # queries per encode call and search


def check_engine(engine: str) -> None:
    from negmine.errors import check_choice

    check_choice("--engine", engine, ENGINES)


def check_precision(precision: str, engine: str) -> str:
    """The encoder precision a stage runs in: an unknown one fails before any work; so does float16
    without a GPU here, on the local engine (Ray actors load the model on their own devices and check it
    there). "auto" is resolved on this machine (negmine.retrieve.device.resolve_precision), for either engine: the
    stage's cache key and stats name the precision the encoder ran in."""
    from negmine.retrieve.device import check_precision as check
    from negmine.retrieve.device import resolve_precision

    check(precision, "cuda" if engine == "ray" else None)
    return resolve_precision(precision) if precision == "auto" else precision


def ran_on(engine: str) -> dict:
    """Recorded in a stage's stats (not its config) when another engine than the local one made the outputs."""
    return {} if engine == "local" else {"engine": engine}


def unless_default(**values: tuple) -> dict:
    """``{name: value}`` of the (value, default) pairs whose value is not the default. Options added after
    runs were recorded go into a config only when set, so those runs' manifests stay up to date."""
    return {name: value for name, (value, default) in values.items() if value != default}


@dataclass
class StageResult:
    stage: str
    skipped: bool
    entry: dict = field(default_factory=dict)


def run_stage(run: Run, stage: str, config: dict, inputs: list[Path], outputs: list[Path], compute: Callable[[], dict], force: bool = False) -> StageResult:
    """Skip the stage when the manifest says it is up to date; else compute it and record it.

    The stage's outputs and its manifest entry change together: until the manifest is written, the
    output files the stage replaces are kept (hard links beside them), and if computing or recording
    fails (a full disk while ``manifest.json`` is written, say) they are put back and the files the
    stage added are removed, so the run directory is as it was.
    """
    if not force and run.is_fresh(stage, config, inputs):
        return StageResult(stage, True, run.manifest["stages"][stage])
    with _outputs_kept(outputs):
        with measure() as m, progress_stage(stage):
            try:
                stats = compute()
            finally:
                release_unused_memory()  # what the stage freed, before the next one starts
        entry = run.record(stage, config, inputs, outputs, m, stats)
    return StageResult(stage, False, entry)


@contextlib.contextmanager
def _outputs_kept(outputs: list[Path]):
    """Keep the output files there are now (a hard link each: no copy) while the body runs; if it
    raises, put them back and remove the output files it added. Folders are left to their writers."""
    existed = {path: path.is_file() for path in outputs}
    kept: dict[Path, Path] = {}
    try:
        for path, was_file in existed.items():
            if was_file:
                backup = path.parent / f".{path.name}.kept-{os.getpid()}.tmp"  # a killed run's are clean_temporaries'
                backup.unlink(missing_ok=True)
                os.link(path, backup)
                kept[path] = backup
    except OSError:  # no hard links here (some filesystems): the stage still writes atomically, file by file
        for backup in kept.values():
            backup.unlink(missing_ok=True)
        kept = {}
    try:
        yield
    except BaseException:
        for path, was_file in existed.items():
            with contextlib.suppress(OSError):
                if path in kept:
                    os.replace(kept[path], path)
                elif not was_file and path.is_file():
                    path.unlink()
        raise
    finally:
        for backup in kept.values():
            backup.unlink(missing_ok=True)


@contextlib.contextmanager
def stdout_to_stderr():
    """Send what native code (the JVM's logger) prints on fd 1 to stderr, keeping stdout for results."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def table_path(run: Run, name: str) -> Path:
    return run.file(f"{name}.parquet")


def table_paths(run: Run, *names: str) -> list[Path]:
    return [table_path(run, n) for n in names]


def retrieval_stats(candidates, positives) -> dict:
    import pyarrow.compute as pc

    found = positives.num_rows - positives.column("rank").null_count
    return {
        "candidates": candidates.num_rows,
        "queries": len(pc.unique(candidates.column("query_id"))),
        "positives": positives.num_rows,
        "positives_retrieved": found,
        "recall": round(found / positives.num_rows, 4) if positives.num_rows else 0.0,
    }


def model_id(model: str) -> str:
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def actor_stats(pool) -> dict:
    """How many Ray actors a pool (negmine.engines.ray.ModelPool) started, and how many of them died and
    were replaced (their parts redone), for a stage's stats."""
    return ({"actors": pool.started} if pool.started else {}) | ({"actors_replaced": pool.replaced} if pool.replaced else {})
