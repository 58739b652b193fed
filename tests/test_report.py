"""negmine report: a self-contained HTML page with its PNG plots beside it."""

import base64
import json
import re

import pytest


from conftest import SAMPLE, invoke

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"




def test_report_embeds_every_plot_and_writes_the_pngs(tmp_path):
    run = tmp_path / "run"
    assert invoke("mine", "--data", SAMPLE, "--out", run, "--strategy", "simans", "--source", "bm25", "--bm25-backend", "bm25s").exit_code == 0
    assert invoke("sample", "--run", run, "--strategy", "topk", "--source", "bm25").exit_code == 0
    assert invoke("estimate-fn", "--run", run, "--source", "bm25", "--qrels-full", SAMPLE / "qrels" / "test.tsv", "--n-boot", 50).exit_code == 0
    out = tmp_path / "site" / "report.html"
    result = invoke("report", "--run", run, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["strategies"] == ["simans", "topk"]
    assert [p.rsplit("/", 1)[1] for p in written["plots"]] == [
        "report_scores.png", "report_negatives_per_query.png", "report_ranks.png", "report_false_negatives.png", "report_timings.png"
    ]
    page = out.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 5
    for encoded, path in zip(embedded, written["plots"]):
        assert base64.b64decode(encoded) == open(path, "rb").read() and base64.b64decode(encoded).startswith(PNG)
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    for stage in ("ingest", "bm25", "sample.simans", "sample.topk", "estimate-fn"):
        assert f"<td>{stage}</td>" in page
    # the strategies table: 7 negatives per (query, positive), counted from the tables themselves
    import pyarrow.parquet as pq

    topk = pq.read_table(run / "negatives_topk.parquet")
    queries = len(set(topk.column("query_id").to_pylist()))
    assert f"<tr><td>topk</td><td>{topk.num_rows}</td><td>{queries}</td>" in page


def test_report_without_fn_report_or_negatives(tmp_path):
    run = tmp_path / "run"
    assert invoke("ingest", "--data", SAMPLE, "--out", run).exit_code == 0
    out = tmp_path / "r.html"
    result = invoke("report", "--run", run, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert [p.rsplit("/", 1)[1] for p in json.loads(result.stdout)["plots"]] == ["r_timings.png"]
    assert "No <code>negatives_*.parquet</code> in this run yet." in out.read_text()


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    result = invoke("report", "--run", tmp_path, "--out", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "manifest.json: not a negmine run directory (no manifest.json)" in " ".join(result.stderr.split())
