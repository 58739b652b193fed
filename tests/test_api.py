"""The Python API (negmine.api): mine, open_run and the run's tables as Arrow, polars and SQL."""

import subprocess
import sys

import pyarrow as pa
import pytest

import negmine
from negmine.errors import BadInputError

from conftest import ROOT, SAMPLE


@pytest.fixture(scope="module")
def mined(tmp_path_factory, model_path):
    out = tmp_path_factory.mktemp("api") / "x"
    return negmine.mine(SAMPLE, out, model=model_path, max_seq_length=128)


def test_the_readme_example_runs_as_written(tmp_path, model_path, monkeypatch):
    """The README's example, pasted: mine sample_data into runs/x and look at the first negatives."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample_data").symlink_to(SAMPLE)
    import negmine as nm

    r = nm.mine("sample_data", "runs/x", model=model_path)
    head = r.polars("negatives_simans").head().collect()
    counts = nm.open_run("runs/x").sql("SELECT strategy, count(*) FROM negatives GROUP BY ALL")
    assert head.height == 5 and {"query_id", "pos_id", "neg_id"} <= set(head.columns)
    assert counts.to_pylist() == [{"strategy": "simans", "count_star()": r.table("negatives_simans").num_rows}]


def test_mine_returns_the_run_and_what_each_stage_did(mined):
    assert [s.stage for s in mined.stages] == ["ingest", "embed", "dense", "duplicates", "sample.simans"]
    assert {"corpus", "queries", "qrels", "candidates_dense", "negatives_simans"} <= set(mined.tables)
    assert mined.summary["sample.simans"]["stats"]["negatives"] == mined.table("negatives_simans").num_rows


def test_a_second_mine_with_the_same_options_skips_every_stage(mined, model_path):
    again = negmine.mine(SAMPLE, mined.path, model=model_path, max_seq_length=128)
    assert all(s.skipped for s in again.stages)


def test_api_and_cli_write_the_same_bytes(mined, tmp_path, model_path):
    from typer.testing import CliRunner

    from negmine.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["mine", "--data", str(SAMPLE), "--out", str(out), "--model", model_path, "--max-seq-length", "128"])
    assert result.exit_code == 0, result.output
    for name in ("candidates_dense", "negatives_simans", "duplicates"):
        assert (out / f"{name}.parquet").read_bytes() == (mined.path / f"{name}.parquet").read_bytes()


def test_open_run_reads_tables_as_arrow_polars_and_sql(mined):
    run = negmine.open_run(mined.path)
    negatives = run.negatives()  # the run's only strategy
    assert isinstance(negatives, pa.Table) and negatives.equals(run.table("negatives_simans"))
    assert run.polars("negatives_simans").collect().height == negatives.num_rows
    counted = run.sql("SELECT count(*) AS n FROM negatives")
    assert counted.column("n").to_pylist() == [negatives.num_rows]
    assert run.manifest["stages"]["sample.simans"]["config"]["strategy"] == "simans"


def test_unknown_tables_options_and_strategies_are_bad_input(mined, tmp_path):
    run = negmine.open_run(mined.path)
    with pytest.raises(BadInputError, match="no table 'nope'"):
        run.table("nope")
    with pytest.raises(BadInputError, match="run directory does not exist"):
        negmine.open_run(tmp_path / "missing")
    with pytest.raises(BadInputError, match="--no-such-option"):
        negmine.mine(SAMPLE, tmp_path / "y", no_such_option=1)
    with pytest.raises(BadInputError, match="--strategy.*simANS2"):
        negmine.mine(SAMPLE, tmp_path / "y", strategy="simANS2")
    assert not (tmp_path / "y").exists() or not list((tmp_path / "y").glob("*.parquet"))  # refused before any stage ran


def test_strategies_and_sample_negatives_are_exported():
    assert {"simans", "topk", "star", "denoise"} <= set(negmine.STRATEGIES)
    from negmine.sample import sample_negatives

    assert negmine.sample_negatives is sample_negatives


def test_importing_negmine_loads_no_heavy_library():
    code = "import sys, negmine; print(sorted(m for m in ('pyarrow', 'torch', 'duckdb', 'polars', 'negmine.api') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
