"""Progress of long steps: nothing unless someone listens, log lines when stderr is not a terminal, same outputs."""

import io
import os
import re
import subprocess
import sys

from conftest import ROOT, SAMPLE

from negmine import progress

LINE = re.compile(r"^negmine (\S+(?: [a-z ]+)?): ([\d,]+)/([\d,]+) (\w+) \([\d.]+%\), [\d,.]+ \4/s, (\d+:\d\d:\d\d left|done in \d+:\d\d:\d\d)$")


def test_nobody_listening_costs_nothing_and_prints_nothing(capsys):
    with progress.stage("embed"), progress.track(10, "docs") as bar:
        assert bar is progress.SILENT and not bar.active
        bar.advance(5)
        bar.update_to(10)
    assert capsys.readouterr() == ("", "")


def test_log_lines_carry_the_stage_name_count_rate_and_time_left():
    out = io.StringIO()
    with progress.reporting(progress.LogReporter(out, every=0)):
        with progress.stage("embed"), progress.track(300, "docs") as bar:
            bar.advance(100)
            bar.update_to(300)
        with progress.prefix("round-1/"), progress.stage("bm25"), progress.track(60, "queries", "search") as bar:
            bar.advance(60)
    lines = out.getvalue().splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["embed"] * 3 + ["round-1/bm25 search"] * 2  # the step follows the stage's name
    assert lines[0].startswith("negmine embed: 100/300 docs (33.3%), ") and lines[0].endswith(" left")
    assert "done in" in lines[2] and lines[3].startswith("negmine round-1/bm25 search: 60/60 queries")


def test_log_lines_at_most_every_interval():
    out = io.StringIO()
    with progress.reporting(progress.LogReporter(out, every=3600)):
        with progress.stage("embed"), progress.track(1000, "docs") as bar:
            for _ in range(1000):
                bar.advance(1)
    assert out.getvalue() == ""  # a short step logs nothing, not even its end


def test_encoding_gives_the_same_floats_with_progress_shown(model_path):
    import numpy as np

    from negmine.retrieve.encode import encode
    from negmine.retrieve.models import load_model

    model = load_model(model_path, 64)
    texts = [f"document number {i} " * (1 + i % 7) for i in range(40)]
    quiet = encode(model, texts, 8)
    counted = []
    with progress.reporting(progress.LogReporter(io.StringIO(), every=0)):
        with progress.track(len(texts), "docs") as bar:
            shown = encode(model, texts, 8, on_batch=lambda n: (counted.append(n), bar.advance(n)))
    assert np.array_equal(quiet, shown) and sum(counted) == len(texts)


def test_mine_with_stderr_redirected_logs_embed_progress(tmp_path, model_path):
    """What CI and Airflow logs show: lines during the embed stage (labelled as the summary names it)."""
    err = tmp_path / "stderr.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", NEGMINE_PROGRESS_INTERVAL="0")
    with open(err, "w") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "negmine.cli", "mine", "--data", str(SAMPLE), "--out", str(tmp_path / "run"), "--model", model_path, "--k", "20"],
            stdout=subprocess.DEVNULL, stderr=fh, env=env, timeout=600,
        )
    log = err.read_text()
    assert done.returncode == 0, log
    embed = [line for line in log.splitlines() if line.startswith("negmine embed: ")]
    assert len(embed) >= 2 and all(LINE.match(line) for line in embed), log
    assert embed[-1].startswith("negmine embed: 300/300 docs (100.0%)") and "done in" in embed[-1]
    assert "negmine dense" in log  # the search, under the dense stage's name
    assert "\x1b[" not in log.split("mine --strategy")[0]  # no terminal control codes in a log file
