"""Same inputs and seed ⇒ identical bytes, across runs and across --threads (1 vs 2), for pyserini
BM25 and for dense retrieval (embeddings included)."""

import pytest

from helpers import SAMPLE, final_tables, invoke, reference_run, small_beir


def mine_into(run, *args):
    result = invoke("mine", "--data", SAMPLE, "--out", run, *args)
    assert result.exit_code == 0, result.output
    return final_tables(run)


@pytest.mark.slow
def test_pyserini_bm25_is_byte_identical_across_runs_and_threads(tmp_path):
    args = ("--source", "bm25", "--bm25-backend", "pyserini", "--strategy", "simans", "--seed", "7")
    one = mine_into(tmp_path / "t1", *args, "--threads", 1)
    two = mine_into(tmp_path / "t2", *args, "--threads", 2)
    assert {"candidates_bm25.parquet", "positive_scores_bm25.parquet", "negatives_simans.parquet"} <= set(one)
    assert one == two


@pytest.mark.slow
def test_dense_is_byte_identical_across_runs_and_threads(tmp_path, model_path):
    data = small_beir(tmp_path / "data")  # same bytes as the fault test's, so its reference is shared
    args = ("--source", "dense", "--strategy", "topk", "--model", model_path, "--max-seq-length", 32, "--batch-size", 8, "--k", 10)
    reference = reference_run("dense-small", "mine", "--data", data, *args, "--out", "{run}")  # --threads 1
    result = invoke("mine", "--data", data, "--out", tmp_path / "t2", *args, "--threads", 2)
    assert result.exit_code == 0, result.output
    two = final_tables(tmp_path / "t2")
    assert "embeddings/corpus.npy" in two
    assert two == final_tables(reference)


def test_bm25s_is_byte_identical_across_threads(tmp_path):
    args = ("--source", "bm25", "--bm25-backend", "bm25s", "--strategy", "simans")
    assert mine_into(tmp_path / "t1", *args, "--threads", 1) == mine_into(tmp_path / "t2", *args, "--threads", 2)
