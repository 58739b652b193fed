"""The Python API: mine a dataset into a run directory, open a run, read its tables as Arrow, polars or SQL.

    import negmine

    result = negmine.mine("sample_data", "runs/x", model=PATH)   # the same stages as `negmine mine`
    result.polars("negatives_simans").head().collect()            # a polars LazyFrame
    negmine.open_run("runs/x").sql("SELECT count(*) FROM negatives")

Options are the stage runners' parameters (negmine.runners), by name, with their defaults; a rerun
with the same inputs and options skips every stage that is up to date, as the CLI does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from negmine.errors import BadInputError

if TYPE_CHECKING:
    import polars
    import pyarrow as pa

    from negmine.runners.base import StageResult


class RunTables:
    """The tables of a run directory (one Parquet file each), read-only."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise BadInputError(self.path, "run directory does not exist")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, tables={self.tables})"

    @property
    def tables(self) -> list[str]:
        """The names of the run's tables (``negatives_simans``, ``candidates_dense`` ...), sorted."""
        return sorted(p.stem for p in self.path.glob("*.parquet"))

    @property
    def manifest(self) -> dict:
        """The run's manifest: per stage its config, input and output hashes, wall time and stats."""
        path = self.path / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _file(self, name: str) -> Path:
        path = self.path / f"{name}.parquet"
        if not path.is_file():
            raise BadInputError(path, f"no table {name!r}; this run has {self.tables}")
        return path

    def table(self, name: str) -> pa.Table:
        """Table ``name`` as an Arrow table (read from one open file: a concurrent rewrite is never seen half-done)."""
        import pyarrow.parquet as pq

        path = self._file(name)
        with open(path, "rb") as fh:
            return pq.read_table(fh)

    def polars(self, name: str) -> polars.LazyFrame:
        """Table ``name`` as a polars LazyFrame (nothing is read until it is collected)."""
        import polars as pl

        return pl.scan_parquet(self._file(name))

    def sql(self, query: str, allow_external: bool = False) -> pa.Table:
        """``query`` in DuckDB over the run's tables (each a view named after its file; ``negatives`` is
        every strategy's negatives together), as an Arrow table. Read-only and confined to the run's
        files unless ``allow_external`` (as ``negmine sql``)."""
        from negmine.sql import query_arrow

        return query_arrow(self.path, query, allow_external)

    def negatives(self, strategy: str | None = None) -> pa.Table:
        """The negatives of ``strategy`` (None: the run's only negatives table)."""
        from negmine.runners.export import only_strategy

        return self.table(f"negatives_{strategy if strategy is not None else only_strategy(self.path)}")


class MineResult(RunTables):
    """A mined run: its tables, and what each stage did (``stages``; ``summary`` as ``--json`` prints it)."""

    def __init__(self, path: str | os.PathLike, stages: list[StageResult]):
        super().__init__(path)
        self.stages = stages

    @property
    def summary(self) -> dict:
        from negmine.summary import summary_dict

        return summary_dict(self.stages)


def mine(data: str | os.PathLike, out: str | os.PathLike, strategy: str = "simans", *, force: bool = False, on_stage=None, **options) -> MineResult:
    """Mine ``strategy``'s negatives from the dataset at ``data`` into the run directory ``out``.

    Runs the stages ``negmine mine`` runs (negmine.recipes.mine_recipe): ingest, retrieval, the
    false-negative control, sampling; each stage is skipped when its outputs are up to date. The run
    directory is locked while it runs. ``options`` are the runners' parameters by name (``model``,
    ``source``, ``k``, ``num_negatives``, ``seed``, ``teacher`` (a spec or a list of them, scored side by
    side), ``teacher_name``, ``max_fn_prob``, ``params`` ...);
    an option no stage takes is a BadInputError. ``on_stage(name)`` is called as each stage starts.
    """
    from negmine.recipes import mine_recipe, run_recipe

    recipe = mine_recipe(strategy=strategy, **options)
    return MineResult(out, run_recipe(recipe, data, out, force, on_stage=on_stage))


def open_run(path: str | os.PathLike) -> RunTables:
    """An existing run directory's tables."""
    return RunTables(path)
