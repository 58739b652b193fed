"""A stage's outputs and its manifest entry change together: if the manifest cannot be written (a
full disk at the very end of a stage), the outputs the stage replaced are put back and those it
added removed, so the run directory is exactly as it was and a rerun recomputes the stage."""

import errno

import pytest

import negmine.rundir
from negmine.errors import OutputError
from negmine.rundir import Run
from negmine.runners import ingest_stage, sample_stage
from negmine.runners.bm25 import bm25_stage

from conftest import SAMPLE
from helpers import temporaries, tree_hashes


@pytest.fixture
def run(tmp_path):
    run = Run.open(tmp_path / "run")
    ingest_stage(run, SAMPLE)
    bm25_stage(run, k=20, backend="bm25s")
    sample_stage(run, "simans", "bm25", num_negatives=3)
    return run


def failing_manifest(monkeypatch):
    real = negmine.rundir.write_json

    def write_json(obj, path):
        if path.name == "manifest.json":
            raise OutputError(path, OSError(errno.EFBIG, "File too large"))
        return real(obj, path)

    monkeypatch.setattr(negmine.rundir, "write_json", write_json)


def test_a_manifest_that_cannot_be_written_leaves_the_replaced_outputs_as_they_were(run, monkeypatch):
    before, entry = tree_hashes(run.path), run.manifest["stages"]["sample.simans"]
    failing_manifest(monkeypatch)
    with pytest.raises(OutputError, match="manifest.json: cannot write"):
        sample_stage(run, "simans", "bm25", num_negatives=2)  # rewrites negatives_simans.parquet
    assert tree_hashes(run.path) == before and temporaries(run.path) == []
    assert run.manifest["stages"]["sample.simans"] == entry  # the manifest in memory is the one on disk
    monkeypatch.undo()
    assert not sample_stage(run, "simans", "bm25", num_negatives=2).skipped
    assert tree_hashes(run.path)["negatives_simans.parquet"] != before["negatives_simans.parquet"]


def test_outputs_a_failed_stage_added_are_removed(run, monkeypatch):
    before = tree_hashes(run.path)
    failing_manifest(monkeypatch)
    with pytest.raises(OutputError):
        sample_stage(run, "topk", "bm25", num_negatives=2)  # a table the run did not have
    assert tree_hashes(run.path) == before and not run.file("negatives_topk.parquet").exists()
    assert "sample.topk" not in run.manifest["stages"]
