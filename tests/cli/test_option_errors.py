"""Every bad choice of an option is bad input: exit 2, a message naming the option and the valid values, nothing run."""

import pytest
from typer.testing import CliRunner

from negmine.cli import app

from conftest import SAMPLE

CASES = {
    "zero negatives": (["--num-negatives", "0"], "--num-negatives", "must be a whole number >= 1"),
    "negative negatives": (["--num-negatives", "-3"], "--num-negatives", "got -3"),
    "unknown strategy": (["--strategy", "simANS2"], "--strategy", "'simans'"),
    "denoise without a teacher": (["--strategy", "denoise"], "--teacher", "needs a teacher"),
    "zero k": (["--k", "0"], "--k", "must be a whole number >= 1"),
    "unknown source": (["--source", "sparse"], "--source", "'hybrid'"),
    "unknown precision": (["--precision", "fp8"], "--precision", "'bfloat16'"),
    "unknown format": (["--format", "csv"], "csv", "beir"),
    "unknown fusion": (["--source", "hybrid", "--fusion", "max"], "--fusion", "'rrf'"),
    "unknown engine": (["--engine", "spark"], "--engine", "'ray'"),
    "unknown index": (["--index", "lsh"], "--index", "'hnsw'"),
    "unknown strategy parameter": (["--param", "nope=1"], "--param", "no parameter 'nope'"),
    "two teachers under one label": (["--teacher", "a=bi-encoder:x", "--teacher", "a=bi-encoder:y"], "--teacher", "the label 'a' names two teachers"),
    "a teacher label that is no label": (["--teacher", "bi-encoder:x", "--teacher-name", "2nd"], "--teacher-name", "is not a teacher label"),
}


@pytest.mark.parametrize("case", CASES)
def test_mine_refuses_a_bad_option_with_exit_2_before_any_stage(case, tmp_path, model_path):
    args, option, says = CASES[case]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["mine", "--data", str(SAMPLE), "--out", str(out), "--model", model_path, *args])
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.output
    assert option in message and says in message, message
    if case != "unknown format":  # the format is the ingest stage's own check, on its input
        assert not out.exists() or not list(out.glob("*.parquet"))


@pytest.mark.parametrize(("command", "args", "option"), [
    ("sample", ["--strategy", "nope"], "--strategy"),
    ("sample", ["--num-negatives", "0"], "--num-negatives"),
    ("sample", ["--source", "nope"], "--source"),
    ("dense", ["--precision", "fp8"], "--precision"),
    ("rescore", ["--teacher", "bi-encoder:x", "--source", "nope"], "--source"),
    ("rescore", ["--teacher", "bi-encoder:x", "--teacher", "bi-encoder:y", "--teacher", "t2=bi-encoder:z"], "--teacher"),
    ("sample", ["--teacher-name", "2x"], "--teacher-name"),
    ("estimate-fn", ["--teacher-name", "a b"], "--teacher-name"),
    ("fn-scores", ["--source", "nope"], "--source"),
    ("train", ["--name", "m", "--method", "nope"], "--method"),
])
def test_each_command_refuses_a_bad_choice_with_exit_2(command, args, option, tmp_path):
    result = CliRunner().invoke(app, [command, "--run", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert option in " ".join(result.stderr.split())
