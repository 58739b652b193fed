"""Dedicated CLI options of the main strategy parameters, on `sample` and `mine`."""

import inspect
import json
import re

import pyarrow as pa
import pytest

from negmine.cli import app
from negmine.io import write_table
from negmine.rundir import Run
from negmine.sample import strategy_params
from negmine.schemas import CANDIDATES, CLUSTERS, CORPUS, POSITIVE_SCORES, QRELS, QUERIES, SCORED_CANDIDATES, SCORED_POSITIVES

from conftest import SAMPLE, invoke


# option → (strategy, parameter) it sets
FLAGS = {
    "--a": ("simans", "a"),
    "--b": ("simans", "b"),
    "--kernel": ("simans", "kernel"),
    "--positive-score": ("simans", "positive_score"),
    "--score": ("simans", "score"),
    "--range-min": ("range", "range_min"),
    "--range-max": ("range", "range_max"),
    "--max-relative": ("positive-aware", "max_relative"),
    "--margin": ("positive-aware", "margin"),
    "--max-score": ("positive-aware", "max_score"),
    "--hard-ratio": ("star", "hard_ratio"),
    "--n-stages": ("curriculum", "n_stages"),
    "--n-bins": ("tas-balanced", "n_bins"),
    "--negative-below": ("denoise", "negative_below"),
    "--positive-above": ("denoise", "positive_above"),
    "--pseudo-positives/--no-pseudo-positives": ("denoise", "pseudo_positives"),
}




def _options(command_name):
    command = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == command_name)
    return {p.default.param_decls[0]: p.default for p in inspect.signature(command.callback).parameters.values()}


@pytest.mark.parametrize("command", ["sample", "mine"])
def test_every_strategy_flag_exists_defaults_to_none_and_its_help_names_the_signature_default(command):
    options = _options(command)
    for flag, (strategy, name) in FLAGS.items():
        option = options[flag]
        assert option.default is None, flag  # the default lives in the strategy's signature
        assert option.help.lower().startswith(f"{strategy}:"), flag  # the help names the strategy it tunes
        stated = re.search(r"\(default ([^)]+)\)", option.help)
        if stated:
            text = stated.group(1)
            assert (float(text) if re.fullmatch(r"-?[\d.]+", text) else text) == strategy_params(strategy)[name], flag  # e.g. simans --b (default -0.5)


def _run(tmp_path):
    """One query q: candidates d1..d6 (scores .9 … .4), positive p (score .8, rank null), teacher probs, a cluster."""
    run = Run.open(tmp_path / "run")
    docs = [f"d{i}" for i in range(1, 7)]
    cand = pa.table({"query_id": ["q"] * 6, "doc_id": docs, "source": ["dense"] * 6, "rank": list(range(1, 7)), "score": [1 - i / 10 for i in range(1, 7)]}, schema=CANDIDATES)
    pos = pa.table({"query_id": ["q"], "doc_id": ["p"], "source": ["dense"], "rank": [None], "score": [0.8]}, schema=POSITIVE_SCORES)
    probs = [0.95, 0.05, 0.5, 0.3, 0.2, 0.1]
    scored = cand.append_column("ce_score", pa.array(probs, pa.float32())).append_column("ce_prob", pa.array(probs, pa.float32())).cast(SCORED_CANDIDATES)
    scored_pos = pos.append_column("ce_score", pa.array([0.99], pa.float32())).append_column("ce_prob", pa.array([0.99], pa.float32())).cast(SCORED_POSITIVES)
    for name, table, schema in (
        ("candidates_dense", cand, CANDIDATES), ("positive_scores_dense", pos, POSITIVE_SCORES),
        ("scored_candidates_dense", scored, SCORED_CANDIDATES), ("scored_positives_dense", scored_pos, SCORED_POSITIVES),
        ("qrels", pa.table({"query_id": ["q"], "doc_id": ["p"], "relevance": [1]}), QRELS),
        ("queries", pa.table({"query_id": ["q"], "text": ["a query"]}), QUERIES),
        ("corpus", pa.table({"doc_id": docs + ["p", "e1", "e2"], "title": [None] * 9, "text": [f"the text of document {d}" for d in docs + ["p", "e1", "e2"]]}), CORPUS),
        ("clusters", pa.table({"query_id": ["q"], "cluster_id": [0], "distance": [0.0]}), CLUSTERS),
    ):
        write_table(table, run.file(f"{name}.parquet"), schema)
    return run.path


@pytest.mark.parametrize(
    "strategy, flags, expected",
    [
        ("positive-aware", ["--max-relative", 0.5, "--margin", 0.01, "--max-score", 0.9], {"max_relative": 0.5, "margin": 0.01, "max_score": 0.9}),
        ("star", ["--hard-ratio", 1.0], {"hard_ratio": 1.0}),
        ("curriculum", ["--n-stages", 2], {"n_stages": 2}),
        ("tas-balanced", ["--n-bins", 3], {"n_bins": 3}),
        ("simans", ["--score", "ce", "--a", 2.0], {"score": "ce", "a": 2.0}),
        ("simans", ["--a", 0.5, "--b", 0.0, "--param", "scale=raw"], {"a": 0.5, "b": 0.0, "scale": "raw"}),
        ("denoise", ["--negative-below", 0.4, "--positive-above", 0.9, "--pseudo-positives"], {"negative_below": 0.4, "positive_above": 0.9, "pseudo_positives": True}),
    ],
)
def test_sample_flags_reach_the_strategy(tmp_path, strategy, flags, expected):
    run = _run(tmp_path)
    result = invoke("sample", "--run", run, "--strategy", strategy, "--num-negatives", 2, *flags, "--json")
    assert result.exit_code == 0, result.output
    params = json.loads((run / "manifest.json").read_text())["stages"][f"sample.{strategy}"]["config"]["params"]
    assert params == {**strategy_params(strategy), **expected}


def test_flag_values_change_the_negatives(tmp_path):
    run = _run(tmp_path)
    import pyarrow.parquet as pq

    invoke("sample", "--run", run, "--strategy", "positive-aware", "--max-relative", 0.7, "--json")
    # s+ = 0.8: keep scores < 0.7 × 0.8 = 0.56 → d5 (0.5), d6 (0.4)
    assert pq.read_table(run / "negatives_positive-aware.parquet").column("neg_id").to_pylist() == ["d5", "d6"]
    invoke("sample", "--run", run, "--strategy", "denoise", "--negative-below", 0.25, "--json")
    assert pq.read_table(run / "negatives_denoise.parquet").column("neg_id").to_pylist() == ["d2", "d5", "d6"]  # probs .05, .2, .1


def test_param_still_overrides_and_a_flag_of_another_strategy_is_refused(tmp_path):
    run = _run(tmp_path)
    result = invoke("sample", "--run", run, "--strategy", "curriculum", "--n-stages", 2, "--param", "n_stages=3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "manifest.json").read_text())["stages"]["sample.curriculum"]["config"]["params"] == {"n_stages": 3}
    result = invoke("sample", "--run", run, "--strategy", "topk", "--n-bins", 3)
    assert result.exit_code == 2
    assert result.stderr.replace("\n", "") == "error: --param: strategy 'topk' has no parameter 'n_bins'; its parameters are []"


def test_mine_passes_the_flags(tmp_path):
    run = tmp_path / "mine"
    common = ["mine", "--data", SAMPLE, "--out", run, "--source", "bm25", "--bm25-backend", "bm25s", "--k", 20, "--json"]
    result = invoke(*common, "--strategy", "positive-aware", "--max-relative", 0.9, "--margin", 0.5)
    assert result.exit_code == 0, result.output
    result = invoke(*common, "--strategy", "curriculum", "--n-stages", 2)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bm25"]["skipped"]
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["sample.positive-aware"]["config"]["params"] == {"max_relative": 0.9, "margin": 0.5, "max_score": None}
    assert stages["sample.curriculum"]["config"]["params"] == {"n_stages": 2}
