"""Fault injection: `negmine mine` killed with SIGKILL at every write of every stage, then rerun.

The NEGMINE_TEST_PAUSE_AT hook (negmine.io) stops a run with a complete temporary file that is
not yet renamed; the test kills it there. After every kill, each table on disk is either absent or
byte-identical to the uninterrupted run's (no half table looks whole); the rerun removes the
temporaries and ends byte-identical to the uninterrupted run.
"""

import signal

from helpers import SAMPLE, final_tables, small_beir, reference_run, run_negmine, start_negmine, temporaries, wait_for_pause

BM25 = ("mine", "--data", SAMPLE, "--source", "bm25", "--bm25-backend", "bm25s", "--strategy", "simans")
# every atomic write of ingest → bm25 → sample, in order, and the manifest after ingest
BM25_WRITES = [
    "corpus.parquet",
    "queries.parquet",
    "qrels.parquet",
    "manifest.json",
    "candidates_bm25.parquet",
    "positive_scores_bm25.parquet",
    "negatives_simans.parquet",
]
FIGURES = {"faults_injected": 0, "reruns_compared": 0, "table_bytes_compared": 0, "table_bytes_differing": 0}


def kill_at(command, run, name):
    proc = start_negmine(*command, "--out", run, NEGMINE_TEST_PAUSE_AT=name)
    line = wait_for_pause(proc)
    assert line.strip().endswith("/" + name) and str(run) in line
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    FIGURES["faults_injected"] += 1


def assert_no_half_tables(run, reference):
    expected = final_tables(reference)
    for name, digest in final_tables(run).items():
        assert digest == expected[name], f"{name} looks whole but differs from the uninterrupted run"


def assert_rerun_identical(run, reference):
    mine, expected = final_tables(run), final_tables(reference)
    sizes = {name: (reference / name).stat().st_size for name in expected}
    FIGURES["table_bytes_compared"] += sum(sizes.values())
    FIGURES["table_bytes_differing"] += sum(sizes[n] for n in expected if mine.get(n) != expected[n])
    FIGURES["reruns_compared"] += 1
    assert mine == expected


def test_killed_in_each_stage_then_rerun_gives_identical_tables(tmp_path):
    """A fresh run directory per kill point: mid-ingest, between a stage's outputs and its manifest
    entry, mid-bm25, mid-sample (test_killed_repeatedly... covers every write)."""
    reference = reference_run("bm25s-simans", *BM25, "--out", "{run}")
    for name in ("queries.parquet", "manifest.json", "positive_scores_bm25.parquet", "negatives_simans.parquet"):
        run = tmp_path / name
        kill_at(BM25, run, name)
        leftovers = temporaries(run)
        assert any(t.startswith(f".{name}.") for t in leftovers), leftovers
        assert not (run / name).exists() or name == "manifest.json"
        assert_no_half_tables(run, reference)
        rerun = run_negmine(*BM25, "--out", run)
        assert rerun.returncode == 0, rerun.stderr
        assert temporaries(run) == []
        assert_rerun_identical(run, reference)


def test_killed_repeatedly_on_one_run_directory_resumes(tmp_path):
    """One run directory killed at each write in turn, the next run resuming from the last."""
    reference = reference_run("bm25s-simans", *BM25, "--out", "{run}")
    run = tmp_path / "run"
    for name in BM25_WRITES:
        kill_at(BM25, run, name)
        assert_no_half_tables(run, reference)
    rerun = run_negmine(*BM25, "--out", run)
    assert rerun.returncode == 0, rerun.stderr
    assert temporaries(run) == []
    assert_rerun_identical(run, reference)


def test_killed_in_embed_and_dense_then_rerun_gives_identical_embeddings_and_tables(tmp_path, model_path):
    data = small_beir(tmp_path / "data")
    dense = ("mine", "--data", data, "--source", "dense", "--strategy", "topk", "--model", model_path,
             "--max-seq-length", 32, "--batch-size", 8, "--k", 10)
    reference = reference_run("dense-small", *dense, "--out", "{run}")
    run = tmp_path / "run"
    kill_at(dense, run, "corpus.npy")  # the corpus is encoded into the temporary memmap, not yet renamed
    assert not (run / "embeddings" / "corpus.npy").exists()
    assert temporaries(run)
    assert list((run / "embeddings").glob(".corpus.parts-*/000000.npy"))  # the encoded chunk, kept to resume
    assert_no_half_tables(run, reference)
    rerun = run_negmine(*dense, "--out", run, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert temporaries(run) == []
    assert_rerun_identical(run, reference)


def test_figures(capsys):
    with capsys.disabled():
        print(f"\nfault injection: {FIGURES}")
