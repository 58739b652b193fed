"""Two real negmine processes on one run directory: the second is refused (exit 3), nothing interleaves."""

import signal

from helpers import SAMPLE, final_tables, run_negmine, start_negmine, temporaries, tree_hashes, wait_for_pause

LOCKED = 3
MINE = ("mine", "--data", SAMPLE, "--source", "bm25", "--bm25-backend", "bm25s", "--strategy", "topk")


def test_second_negmine_is_refused_while_the_first_holds_the_run(tmp_path):
    run, resume = tmp_path / "run", tmp_path / "resume"
    first = start_negmine(*MINE, "--out", run, NEGMINE_TEST_PAUSE_AT="candidates_bm25.parquet", NEGMINE_TEST_RESUME_FILE=resume)
    try:
        wait_for_pause(first)
        before = tree_hashes(run)
        for command in (MINE, ("ingest", "--data", SAMPLE), ("sample", "--source", "bm25", "--strategy", "topk")):
            second = run_negmine(*command, "--out", run)
            assert second.returncode == LOCKED, second.stderr
            assert f"{run}: run directory is in use by another negmine (pid {first.pid})" in second.stderr
            assert "Traceback" not in second.stderr
        assert tree_hashes(run) == before  # the refused process wrote nothing, not even a temporary
        resume.touch()
        assert first.wait(120) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert temporaries(run) == []
    reference = tmp_path / "reference"
    assert run_negmine(*MINE, "--out", reference).returncode == 0
    assert final_tables(run) == final_tables(reference)


def test_two_racing_runs_never_interleave(tmp_path):
    """Started together: each either finishes or is refused; the tables equal an uninterrupted run's."""
    run = tmp_path / "run"
    procs = [start_negmine(*MINE, "--out", run) for _ in range(3)]
    codes = [p.wait(120) for p in procs]
    assert set(codes) <= {0, LOCKED} and 0 in codes, [p.stderr.read() for p in procs]
    for proc, code in zip(procs, codes):
        if code == LOCKED:
            assert "run directory is in use by another negmine" in proc.stderr.read()
    reference = tmp_path / "reference"
    assert run_negmine(*MINE, "--out", reference).returncode == 0
    assert final_tables(run) == final_tables(reference)
    assert temporaries(run) == []
