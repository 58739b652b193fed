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
