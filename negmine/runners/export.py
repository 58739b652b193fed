"""A recipe's ``export`` stage: training data for another trainer, written into the run directory."""

from __future__ import annotations

from negmine.rundir import Run
from negmine.runners.base import StageResult


def export_stage(run: Run, strategy: str | None = None, format: str = "sentence-transformers", out: str = "export.jsonl", layout: str = "n-tuple",
                 num_negatives: int | None = None, group_ids: bool | None = None, force: bool = False) -> StageResult:
    """Write an export (negmine.export) of ``negatives_<strategy>`` to ``out``, relative to the run directory."""
    from negmine.export import export_run

    stats = export_run(run.path, strategy, format, run.path / out, layout, num_negatives, group_ids)
    return StageResult(f"export.{format}", False, {"stats": stats})
