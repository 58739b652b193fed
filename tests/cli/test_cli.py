"""End to end through Typer's runner on sample_data/, with the real model, faiss and pyserini."""

import json
import time

import pyarrow.parquet as pq
import pytest

from negmine.cli import app

from conftest import SAMPLE, invoke





@pytest.fixture(scope="module")
def mined(tmp_path_factory, model_path):
    run = tmp_path_factory.mktemp("runs") / "simans"
    result = invoke("mine", "--data", SAMPLE, "--out", run, "--strategy", "simans", "--model", model_path, "--max-seq-length", 128, "--json")
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_mine_simans_writes_every_table(mined):
    run, summary = mined
    for name in ("corpus", "queries", "qrels", "candidates_dense", "positive_scores_dense", "negatives_simans"):
        assert (run / f"{name}.parquet").exists()
    assert (run / "embeddings" / "corpus.npy").exists()
    assert summary["sample.simans"]["stats"]["queries"] == 60
    negatives = pq.read_table(run / "negatives_simans.parquet")
    assert negatives.num_rows == 7 * summary["sample.simans"]["stats"]["pairs"]
    qrels = {(r["query_id"], r["doc_id"]) for r in pq.read_table(run / "qrels.parquet").to_pylist()}
    assert not any((r["query_id"], r["neg_id"]) in qrels for r in negatives.to_pylist())
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"ingest", "embed", "dense", "duplicates", "sample.simans"}
    assert manifest["stages"]["dense"]["stats"]["recall"] > 0.8


def test_rerun_skips_fresh_stages_and_changed_parameter_reruns_only_sample(mined, model_path):
    run, _ = mined
    before = (run / "negatives_simans.parquet").read_bytes()
    start = time.perf_counter()
    result = invoke("mine", "--data", SAMPLE, "--out", run, "--model", model_path, "--max-seq-length", 128, "--json")
    summary = json.loads(result.stdout)
    assert all(stage["skipped"] for stage in summary.values())
    assert time.perf_counter() - start < 10
    assert (run / "negatives_simans.parquet").read_bytes() == before
    result = invoke("mine", "--data", SAMPLE, "--out", run, "--model", model_path, "--max-seq-length", 128, "--a", 20, "--json")
    summary = json.loads(result.stdout)
    assert [s for s, v in summary.items() if not v["skipped"]] == ["sample.simans"]
    result = invoke("sample", "--run", run, "--strategy", "simans", "--json", "--force")
    assert (run / "negatives_simans.parquet").read_bytes() == before  # same seed, same bytes


def test_same_inputs_and_seed_give_identical_bytes(mined, tmp_path, model_path):
    run, _ = mined
    other = tmp_path / "again"
    result = invoke("mine", "--data", SAMPLE, "--out", other, "--model", model_path, "--max-seq-length", 128, "--json")
    assert result.exit_code == 0
    for name in ("corpus", "qrels", "candidates_dense", "negatives_simans"):
        assert (other / f"{name}.parquet").read_bytes() == (run / f"{name}.parquet").read_bytes(), name


def test_bm25_pyserini_topk_and_range(mined):
    run, _ = mined
    result = invoke("bm25", "--run", run, "--k", 50, "--threads", 2, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["bm25"]["stats"]
    assert stats["candidates"] > 0 and stats["recall"] > 0.8
    candidates = pq.read_table(run / "candidates_bm25.parquet")
    assert set(candidates.column("source").to_pylist()) == {"bm25"}
    result = invoke("sample", "--run", run, "--strategy", "topk", "--source", "bm25", "--json")
    assert json.loads(result.stdout)["sample.topk"]["stats"]["negatives"] > 0
    result = invoke("sample", "--run", run, "--strategy", "range", "--range-min", 10, "--range-max", 50, "--json")
    ranks = pq.read_table(run / "negatives_range.parquet").column("source_rank").to_pylist()
    assert 10 <= min(ranks) and max(ranks) <= 50


def test_sql_views_and_formats(mined):
    run, _ = mined
    result = invoke("sql", "--run", run, "--format", "csv", "SELECT strategy, count(*) AS n FROM negatives_simans GROUP BY strategy")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "strategy,n"
    assert result.stdout.splitlines()[1].startswith("simans,")
    result = invoke("sql", "--run", run, "--format", "json", "SELECT count(*) AS n FROM corpus")
    assert json.loads(result.stdout) == {"n": 300}
    result = invoke("sql", "--run", run, "SELECT * FROM nope")
    assert result.exit_code == 2
    assert "Table with name nope does not exist" in result.stderr


def test_bad_input_exits_2_and_leaves_run_untouched(tmp_path, mined, model_path):
    run, _ = mined
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".negmine.lock"}
    bad = tmp_path / "bad"
    (bad / "qrels").mkdir(parents=True)
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n')
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (bad / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    result = invoke("mine", "--data", bad, "--out", run, "--model", model_path)
    assert result.exit_code == 2
    assert f"{bad / 'corpus.jsonl'}, line 2, field '_id': duplicate id 'd1' (first seen at line 1)" in result.stderr.replace("\n", "")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".negmine.lock"} == snapshot


def test_missing_model_path_is_bad_input(tmp_path):
    result = invoke("mine", "--data", SAMPLE, "--out", tmp_path / "r", "--model", tmp_path / "no-such-model")
    assert result.exit_code == 2
    assert "model path does not exist" in result.stderr


def test_every_command_has_help():
    for command in app.registered_commands:
        assert command.callback.__doc__, command.name
    assert invoke("--help").exit_code == 0
