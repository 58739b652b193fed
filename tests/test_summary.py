import pytest
"""The one-line description of each stage in the summary table."""

from negmine.summary import _describe


def test_hybrid_rescore_cluster_and_estimate_fn_lines():
    hybrid = {"fusion": "rrf", "candidates": 1500, "queries": 10, "recall": 0.75, "candidates_by_source": {"bm25": 500, "bm25+dense": 700, "dense": 300}}
    assert _describe("hybrid", hybrid) == "rrf fusion: 1,500 candidates for 10 queries (bm25 500, bm25+dense 700, dense 300); positives retrieved 75.0%"
    rescore = {"teacher_kind": "cross-encoder", "candidates": 2000, "positives": 12, "candidate_prob_mean": 0.25, "positive_prob_mean": None}
    assert _describe("rescore.dense", rescore) == "cross-encoder teacher scored 2,000 candidates and 12 positives; mean prob 0.250 (candidates), – (positives)"
    teachers = [{"label": "t1", "kind": "cross-encoder", "score_column": "ce_score", "candidate_prob_mean": 0.25},
                {"label": "mini", "kind": "bi-encoder", "score_column": "ce_score_mini", "candidate_prob_mean": 0.8125}]
    assert _describe("rescore.dense", rescore | {"teachers": teachers}) == (
        "2 teachers scored 2,000 candidates and 12 positives: t1 (cross-encoder) in ce_score, mean prob 0.250; "
        "mini (bi-encoder) in ce_score_mini, mean prob 0.812")
    cluster = {"queries": 60, "clusters": 8, "size_min": 1, "size_median": 7, "size_max": 15, "singletons": 2, "mean_distance": 0.4}
    assert _describe("cluster", cluster) == "60 queries in 8 clusters (size 1-15, median 7; 2 singletons)"
    fn = {"teacher": True, "strategies": {"topk": {"negatives": 70, "teacher": {"rate": 0.125}}, "random": {"negatives": 70, "labels": {"rate": 0.0}}, "x": {"negatives": 0}}}
    assert _describe("estimate-fn", fn) == "estimated false-negative rate: random 0.0% (labels), topk 12.5% (teacher), x –"


def test_retrieval_and_embedding_lines_report_throughput():
    bm25 = {"candidates": 5756, "queries": 60, "recall": 0.9857, "index_s": 4.3, "search_s": 0.9, "queries_per_s": 66.8, "threads": 2}
    assert _describe("bm25", bm25) == "5,756 candidates for 60 queries; positives retrieved 98.6%; search 67 queries/s on 2 thread(s)"
    embed = {"documents": 5183, "dim": 384, "dtype": "float16", "encode_s": 250.0, "docs_per_s": 20.7}
    assert _describe("embed", embed) == "5,183 documents x 384 (float16), 20.7 docs/s encoded"
    resumed = embed | {"documents_resumed": 3072}
    assert _describe("embed", resumed) == "5,183 documents x 384 (float16), 20.7 docs/s encoded (3,072 resumed from an interrupted run)"


def test_bm25_stage_times_its_index_and_search(tmp_path):
    from negmine.rundir import Run
    from negmine.runners.bm25 import bm25_stage
    from negmine.runners.ingest import ingest_stage

    run = Run.open(tmp_path / "run")
    with run.lock():
        ingest_stage(run, "sample_data")
        stats = bm25_stage(run, k=20, backend="bm25s").entry["stats"]
    assert stats["queries"] == 60 and stats["threads"] == 1
    assert stats["index_s"] > 0 and stats["search_s"] > 0
    # search_s is rounded to the millisecond and queries_per_s to 0.1: their product is 60 up to that rounding
    assert abs(stats["queries_per_s"] * stats["search_s"] - 60) <= stats["queries_per_s"] * 0.0005 + 0.05 * stats["search_s"]


def test_a_rerun_shows_cached_stages_at_0_s_and_keeps_their_time_in_the_manifest(tmp_path):
    import json

    from conftest import SAMPLE, invoke

    run = tmp_path / "run"
    args = ("mine", "--data", SAMPLE, "--out", run, "--source", "bm25", "--bm25-backend", "bm25s")
    assert invoke(*args).exit_code == 0
    rerun = invoke(*args, env={"COLUMNS": "200"})
    assert rerun.exit_code == 0
    rows = [line for line in rerun.stderr.splitlines() if line.startswith("│ ") and line.split("│")[1].strip() in ("ingest", "bm25", "duplicates", "sample.simans")]
    assert len(rows) == 4 and all(row.split("│")[2].strip() == "cached" and row.split("│")[3].strip() == "0.0" for row in rows), rerun.stderr
    summary = json.loads(invoke(*args, "--json").stdout)
    manifest = json.loads((run / "manifest.json").read_text())
    for stage, entry in summary.items():
        assert entry["skipped"] and entry["wall_s"] == 0.0 and entry["peak_rss_mb"] is None
        assert entry["recorded_wall_s"] == manifest["stages"][stage]["wall_s"] > 0


def test_embed_line_names_precision_and_device_and_the_model_is_printed():
    from rich.console import Console

    from negmine.runners.base import StageResult
    from negmine.summary import render

    stats = {"documents": 300, "dim": 384, "dtype": "float16", "docs_per_s": 9.2, "precision": "bfloat16", "device": "cpu", "corpus_prompt": "passage: "}
    assert _describe("embed", stats) == "300 documents x 384 (float16), 9.2 docs/s encoded in bfloat16 on cpu"
    console = Console(record=True, width=200)
    render(console, [StageResult("embed", True, {"config": {"model": "org/model"}, "stats": stats, "wall_s": 30.0, "peak_rss_mb": 500})])
    text = console.export_text()
    assert "model (embed): org/model, document prompt 'passage: '" in text
    assert "cached" in text and "30.0" not in text


@pytest.mark.parametrize("name", ["mine", "train"])
def test_help_keeps_every_option_name_whole_at_80_columns(name):
    import os
    import re
    import subprocess
    import sys

    from conftest import ROOT

    from negmine.cli import app
    import typer.main

    env = dict(os.environ, COLUMNS="80", PYTHONPATH=str(ROOT), TERM="dumb")
    out = subprocess.run([sys.executable, "-m", "negmine.cli", name, "--help"], capture_output=True, text=True, env=env, check=True).stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    shown = set(re.findall(r"--[a-z0-9-]+(?:/--[a-z0-9-]+)?", out))
    command = typer.main.get_command(app).commands[name]
    for param in command.params:
        for option in param.opts + param.secondary_opts:
            if option.startswith("--"):
                assert re.search(re.escape(option) + r"(?![a-z0-9-])", out), f"{option} is cut or missing in `{name} --help` at 80 columns"
    assert shown and "…" not in "".join(line for line in out.splitlines() if line.lstrip("│ ").startswith("-"))
