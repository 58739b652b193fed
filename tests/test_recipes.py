"""negmine run: pipeline files parse, validate with exact messages, and run what `negmine mine` runs."""

import json

import pytest

from negmine.errors import BadInputError
from negmine.recipes import STAGES, parse_recipe, stage_keys

from conftest import ROOT, SAMPLE, invoke

PIPELINES = ROOT / "pipelines"




def test_every_recipe_parses_with_its_stages():
    stages = {p.stem: [name for name, _ in parse_recipe(p).stages] for p in PIPELINES.glob("*.toml")}
    assert stages == {
        "bm25-static": ["ingest", "retrieve", "sample"],
        "dense-topk": ["ingest", "retrieve", "sample"],
        "simans": ["ingest", "retrieve", "sample"],
        "rocketqa-denoise": ["ingest", "retrieve", "rescore", "sample", "estimate-fn"],
        "tas-balanced": ["ingest", "retrieve", "cluster", "sample", "train"],
        "star": ["ingest", "retrieve", "sample", "train"],
        "ance-refresh": ["ingest", "retrieve", "sample", "train"],
    }
    assert parse_recipe(PIPELINES / "ance-refresh.toml").rounds == 2


def _recipe(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_unknown_keys_name_the_valid_ones(tmp_path):
    path = _recipe(tmp_path, 'descripton = "x"\n[[stages]]\nstage = "sample"\n')
    with pytest.raises(BadInputError) as info:
        parse_recipe(path)
    assert str(info.value) == f"{path}: unknown key 'descripton'; valid keys are ['description', 'refresh', 'stages']"

    path = _recipe(tmp_path, '[[stages]]\nstage = "sample"\nnumnegatives = 3\n')
    with pytest.raises(BadInputError) as info:
        parse_recipe(path)
    assert str(info.value) == (
        f"{path}, stages[0] (sample): unknown key 'numnegatives'; valid keys are ['dedup', 'max_fn_prob', 'num_negatives', 'params', 'seed', 'source', 'strategy', 'teacher_name']"
    )

    path = _recipe(tmp_path, '[[stages]]\nstage = "bm26"\n')
    with pytest.raises(BadInputError) as info:
        parse_recipe(path)
    assert str(info.value) == f"{path}, stages[0]: unknown stage 'bm26'; choose from {sorted(STAGES)}"

    path = _recipe(tmp_path, '[[stages]]\nstage = "sample"\nstrategy = "simans"\nparams = { alpha = 1 }\n')
    with pytest.raises(BadInputError) as info:
        parse_recipe(path)
    assert str(info.value) == (
        f"{path}, stages[0] (sample, params of simans): unknown key 'alpha'; valid keys are ['a', 'b', 'kernel', 'positive_score', 'scale', 'score']"
    )

    path = _recipe(tmp_path, '[[stages]]\nstage = "sample"\n[refresh]\nrounds = 1\nevery = 2\n')
    with pytest.raises(BadInputError) as info:
        parse_recipe(path)
    assert str(info.value) == f"{path}, [refresh]: unknown key 'every'; valid keys are ['rounds']"


def test_refresh_needs_a_train_stage_and_rescore_a_teacher(tmp_path):
    path = _recipe(tmp_path, '[[stages]]\nstage = "sample"\n[refresh]\nrounds = 1\n')
    with pytest.raises(BadInputError, match="refresh rounds re-encode with the trained model; add a train stage"):
        parse_recipe(path)
    path = _recipe(tmp_path, '[[stages]]\nstage = "rescore"\n')
    with pytest.raises(BadInputError, match=r"a rescore stage needs teacher = 'cross-encoder:NAME_OR_PATH' \(or --set teacher=\.\.\.\)"):
        parse_recipe(path)


def test_stage_keys_come_from_the_runner_signatures():
    assert stage_keys("retrieve") == [
        "backend", "batch_size", "bm25_backend", "corpus_prompt", "corpus_prompt_name", "dtype", "engine", "fusion", "index", "k", "max_seq_length", "model", "precision",
        "query_prompt", "query_prompt_name", "ray_actors", "ray_address", "source", "threads",
    ]
    assert stage_keys("ingest") == ["corpus", "format", "positive_column", "query_column", "split"]


def test_overrides_reach_every_stage_that_takes_them_and_unknown_ones_fail(tmp_path):
    recipe = parse_recipe(PIPELINES / "simans.toml", {"source": "bm25"})
    assert [params.get("source") for name, params in recipe.stages] == [None, "bm25", "bm25"]
    result = invoke("run", PIPELINES / "simans.toml", "--data", SAMPLE, "--out", tmp_path / "x", "--set", "sourc=bm25")
    assert result.exit_code == 2
    assert "--set: no stage of" in result.stderr and "takes 'sourc'; its stages take ['backend', 'batch_size', 'bm25_backend'" in " ".join(result.stderr.split())
    assert not (tmp_path / "x").exists()


def test_run_simans_recipe_equals_mine_simans_byte_for_byte(tmp_path):
    by_recipe, by_mine = tmp_path / "recipe", tmp_path / "mine"
    result = invoke("run", PIPELINES / "simans.toml", "--data", SAMPLE, "--out", by_recipe, "--set", "source=bm25", "--set", "bm25_backend=bm25s", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"ingest", "bm25", "sample.simans"}
    result = invoke("mine", "--strategy", "simans", "--data", SAMPLE, "--out", by_mine, "--source", "bm25", "--bm25-backend", "bm25s", "--json")
    assert result.exit_code == 0, result.output
    for name in ("candidates_bm25", "negatives_simans"):
        assert (by_recipe / f"{name}.parquet").read_bytes() == (by_mine / f"{name}.parquet").read_bytes(), name
    recipe_manifest = json.loads((by_recipe / "manifest.json").read_text())["stages"]
    mine_manifest = json.loads((by_mine / "manifest.json").read_text())["stages"]
    assert recipe_manifest["sample.simans"]["config"] == mine_manifest["sample.simans"]["config"]
    rerun = invoke("run", PIPELINES / "simans.toml", "--data", SAMPLE, "--out", by_recipe, "--set", "source=bm25", "--set", "bm25_backend=bm25s", "--json")
    assert all(stage["skipped"] for stage in json.loads(rerun.stdout).values())


def test_ance_refresh_round_re_encodes_with_the_trained_model(tmp_path, model_path):
    recipe = tmp_path / "ance.toml"
    recipe.write_text((PIPELINES / "ance-refresh.toml").read_text().replace("rounds = 2", "rounds = 1"))
    out = tmp_path / "ance"
    args = ("run", recipe, "--data", SAMPLE, "--out", out, "--set", f"model={model_path}", "--set", "max_seq_length=16", "--set", "k=20", "--set", "batch_size=16", "--json")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {s for s in summary if s.startswith("round-1/")} == {"round-1/ingest", "round-1/embed", "round-1/dense", "round-1/sample.range", "round-1/train.ance"}
    round1 = json.loads((out / "round-1" / "manifest.json").read_text())["stages"]
    assert round1["dense"]["config"]["model"] == str((out / "models" / "ance" / "final").resolve())
    assert round1["train.ance"]["config"]["model"] == str((out / "models" / "ance" / "final").resolve())
    assert (out / "round-1" / "models" / "ance" / "final").is_dir()
    assert all(stage["skipped"] for stage in json.loads(invoke(*args).stdout).values())  # idempotent rerun


def test_a_list_of_teachers_goes_to_the_rescore_stage_and_the_choice_to_sample(tmp_path, model_path):
    from negmine.recipes import check_stages, mine_recipe

    teachers = [f"bi-encoder:{model_path}", f"short=bi-encoder:{model_path}"]
    recipe = mine_recipe("denoise", teacher=teachers, teacher_name="short")
    assert dict(recipe.stages)["rescore"] == {"teacher": teachers}
    assert dict(recipe.stages)["sample"]["teacher_name"] == "short"
    check_stages(recipe.stages)  # every teacher of the list is checked before a stage runs
    path = _recipe(tmp_path, f'[[stages]]\nstage = "rescore"\nteacher = ["bi-encoder:{model_path}", "t1=bi-encoder:{model_path}"]\n')
    with pytest.raises(BadInputError, match="the label 't1' names two teachers") as info:
        check_stages(parse_recipe(path).stages)
    assert info.value.path == "--teacher"
    with pytest.raises(BadInputError, match="give at least one teacher") as info:
        check_stages(mine_recipe("topk", teacher=[]).stages)
    assert info.value.path == "--teacher"
