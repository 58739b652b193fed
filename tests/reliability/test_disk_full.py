"""An output that cannot be written (file too large via RLIMIT_FSIZE for real, disk full, read-only):
a clear error naming the path, exit code 1, nothing half-written, an existing run left as it was."""

import errno
import resource
import subprocess

import pytest

from negmine.errors import OutputError
from negmine.io import atomic_path

from helpers import SAMPLE, invoke, negmine_cmd, negmine_env, temporaries, tree_hashes, ROOT

FAILURE = 1


def ingest_with_file_size_limit(run, limit=64 * 1024):
    def limit_file_size():  # writes past `limit` fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        negmine_cmd("ingest", "--data", SAMPLE, "--out", run), env=negmine_env(), capture_output=True,
        text=True, timeout=120, cwd=ROOT, preexec_fn=limit_file_size,
    )


def test_file_too_large_names_the_path_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    result = ingest_with_file_size_limit(run)
    assert result.returncode == FAILURE, result.stderr
    assert f"{run}/corpus.parquet: cannot write (File too large)" in result.stderr
    assert "Traceback" not in result.stderr
    assert temporaries(run) == []
    assert sorted(p.name for p in run.iterdir()) == [".negmine.lock"]  # no table, no manifest


def test_file_too_large_leaves_an_existing_run_as_it_was(tmp_path):
    run = tmp_path / "run"
    assert invoke("ingest", "--data", SAMPLE, "--out", run, "--split", "test").exit_code == 0
    before = tree_hashes(run)
    result = ingest_with_file_size_limit(run)  # split train: a different ingest, rewrites corpus.parquet
    assert result.returncode == FAILURE, result.stderr
    assert "corpus.parquet: cannot write (File too large)" in result.stderr
    assert tree_hashes(run) == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT])
def test_write_errors_become_output_errors(tmp_path, code):
    target = tmp_path / "negatives.parquet"
    target.write_bytes(b"old")
    with pytest.raises(OutputError) as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(code, __import__("os").strerror(code))
    assert str(info.value).startswith(f"{target}: cannot write (")
    assert info.value.exit_code == FAILURE
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["negatives.parquet"]


def test_unrelated_errors_are_not_disguised(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "x") as tmp:
            raise ValueError("a bug")
    assert list(tmp_path.iterdir()) == []


# --- every stage after ingest -------------------------------------------------------------------
# Each stage runs as a real process whose files may not grow past LIMIT bytes (smaller than any of the
# stage's outputs), on a copy of a run that has the stages before it done: it exits 1 naming the
# output it could not write, leaves the run directory exactly as it was, and the same command rerun
# without the limit completes with the outputs of an unlimited run.
LIMIT = 256
DENSE = ("--k", 5, "--max-seq-length", 64)


def stage_command(stage, run, model):
    return {
        "embed": ("dense", "--run", run, "--model", model, *DENSE),
        "dense": ("dense", "--run", run, "--model", model, *DENSE),
        "bm25": ("bm25", "--run", run, "--backend", "bm25s", "--k", 5),
        "rescore": ("rescore", "--run", run, "--teacher", f"bi-encoder:{model}", "--max-length", 64),
        "sample": ("sample", "--run", run, "--strategy", "simans", "--num-negatives", 3),
        "export": ("export", "--run", run, "--strategy", "simans", "--out", f"{run}/train.jsonl"),
    }[stage]


# the output each stage writes first (the one the limit stops), and what its run holds before it
FIRST_OUTPUT = {
    "embed": "embeddings/",  # the first encoded chunk kept to resume, or corpus.npy
    "dense": "candidates_dense.parquet",
    "bm25": "candidates_bm25.parquet",
    "rescore": "scored_candidates_dense.parquet",
    "sample": "duplicates.parquet",  # the duplicate documents found, before the negatives
    "export": "train.jsonl",
}
DONE_BEFORE = {"embed": "ingest", "dense": "embed", "bm25": "ingest", "rescore": "dense", "sample": "rescore", "export": "sample"}
ORDER = ["ingest", "embed", "dense", "bm25", "rescore", "sample", "export"]  # how the snapshots are made


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory, model_path):
    """A whole run (ingest, embed, dense, bm25, rescore, sample, export) and a copy of it after each stage."""
    import shutil

    from negmine.rundir import Run
    from negmine.runners.dense import embed_stage

    root = tmp_path_factory.mktemp("stages")
    run = root / "run"
    copies = {}

    def keep(stage):
        copies[stage] = root / stage
        shutil.copytree(run, copies[stage])

    assert invoke("ingest", "--data", SAMPLE, "--out", run).exit_code == 0
    keep("ingest")
    embed_stage(Run.open(run), model_path, max_seq_length=64)  # the dense command's embed, defaults and all
    keep("embed")
    for stage in ("dense", "bm25", "rescore", "sample", "export"):
        result = invoke(*stage_command(stage, run, model_path))
        assert result.exit_code == 0, result.output
        keep(stage)
    return run, copies


def with_file_size_limit(args, limit=LIMIT):
    def limit_file_size():  # writes past `limit` fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        negmine_cmd(*args), env=negmine_env(), capture_output=True, text=True, timeout=300, cwd=ROOT, preexec_fn=limit_file_size,
    )


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(FIRST_OUTPUT))
def test_a_full_disk_in_each_stage_names_the_output_leaves_the_run_and_the_rerun_completes(stage, snapshots, model_path, tmp_path):
    import shutil

    complete, copies = snapshots
    run = tmp_path / "run"
    shutil.copytree(copies[DONE_BEFORE[stage]], run)
    before = tree_hashes(run)
    result = with_file_size_limit(stage_command(stage, run, model_path))
    assert result.returncode == FAILURE, result.stderr
    assert f"{run}/{FIRST_OUTPUT[stage]}" in result.stderr and ": cannot write (File too large)" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert tree_hashes(run) == before
    assert temporaries(run) == []
    rerun = invoke(*stage_command(stage, run, model_path))
    assert rerun.exit_code == 0, rerun.output
    # the stage's outputs as the unlimited run wrote them, and nothing else changed
    upto = "dense" if stage == "embed" else stage  # the dense command embeds, then searches
    expected, previous = tree_hashes(copies[upto]), tree_hashes(copies[ORDER[ORDER.index(stage) - 1]])
    written = {k for k, v in expected.items() if previous.get(k) != v and k != "manifest.json"}
    after = tree_hashes(run)
    assert written and {k: after.get(k) for k in written} == {k: expected[k] for k in written}
    assert {k: v for k, v in after.items() if k not in written and k != "manifest.json"} == {k: v for k, v in before.items() if k != "manifest.json"}


@pytest.mark.slow
def test_a_full_disk_while_lucene_indexes_names_the_index_leaves_the_run_and_the_rerun_completes(snapshots, tmp_path):
    """The pyserini backend's Lucene index (a folder the JVM writes) is the bm25 stage's first output."""
    import shutil

    _, copies = snapshots
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    shutil.copytree(copies["ingest"], run)
    before = tree_hashes(run)
    result = with_file_size_limit(("bm25", "--run", run, "--k", 5))
    assert result.returncode == FAILURE, result.stderr
    assert f"{run}/bm25_index: cannot write (File too large)" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_hashes(run) == before and temporaries(run) == [] and not (run / "bm25_index").exists()
    assert invoke("bm25", "--run", run, "--k", 5).exit_code == 0
    shutil.copytree(copies["ingest"], fresh)
    assert invoke("bm25", "--run", fresh, "--k", 5).exit_code == 0
    for name in ("candidates_bm25.parquet", "positive_scores_bm25.parquet"):
        assert (run / name).read_bytes() == (fresh / name).read_bytes(), name
