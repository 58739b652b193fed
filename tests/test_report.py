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


def _mined(tmp_path):
    run = tmp_path / "run"
    assert invoke("mine", "--data", SAMPLE, "--out", run, "--strategy", "simans", "--source", "bm25", "--bm25-backend", "bm25s", "--seed", 7).exit_code == 0
    out = tmp_path / "report.html"
    assert invoke("report", "--run", run, "--out", out).exit_code == 0
    return run, out


def test_report_header_stage_order_and_how_to_get_false_negatives(tmp_path):
    import negmine

    run, out = _mined(tmp_path)
    page = out.read_text()
    header = page.split('<dl class="run">')[1].split("</dl>")[0]
    assert "<dt>model</dt><dd>none (BM25 only)</dd>" in header
    assert "<dt>strategy simans</dt><dd>a=1.0, b=-0.5" in header and "seed 7" in header
    assert f"<dt>negmine</dt><dd>{negmine.__version__}</dd>" in header
    stages = re.findall(r"<tr><td>([a-z0-9.-]+)</td><td>[\d.]+</td>", page.split("<h2>Stages</h2>")[1])
    assert stages == ["ingest", "bm25", "duplicates", "sample.simans"]  # pipeline order, not alphabetical
    assert f"negmine estimate-fn --run {run}" in page  # the false-negative section says how to get it
    assert "img{display:block;width:100%;height:auto}" in page  # plots take the page's width


def _chromium():
    import shutil

    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary found")
def test_report_renders_in_headless_chromium(tmp_path):
    import subprocess

    import numpy as np
    from PIL import Image

    _, out = _mined(tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,2400", out.as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1280)
    # text and plots drawn across the page: dark pixels in the top (header) and in the plots further down
    assert (pixels[:300] < 100).mean() > 0.002 and (pixels[600:2000] < 200).mean() > 0.01
    # a plot spans most of the page's width (not a ~400 px figure on a wide page)
    rows = (pixels[600:2000] < 250).any(axis=0).nonzero()[0]
    assert rows.max() - rows.min() > 0.6 * 1280
