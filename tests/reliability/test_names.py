"""Names that become part of a path (a model name, a strategy, a candidate source, a recipe's train
name) cannot leave the run directory: separators, ``..``, a leading dot, odd characters and
overlong names are refused with exit 2 naming the option, before anything is written."""

import pytest

from helpers import invoke, small_beir, tree_hashes

from negmine.errors import BadInputError

BAD_INPUT = 2
UNSAFE = ["../../escaped", "a/b", "a\\b", "/abs", "..", ".hidden", "", "x" * 101, "two words", "naïve", "nul\x00byte", "semi;colon"]
SAFE = ["minilm", "tas-balanced", "positive-aware", "model_v2.1", "x" * 100, "A9"]


@pytest.mark.parametrize("value", UNSAFE, ids=repr)
def test_check_name_refuses_what_could_leave_a_folder(value):
    from negmine.names import check_name

    with pytest.raises(BadInputError) as info:
        check_name(value, "--name")
    assert info.value.exit_code == BAD_INPUT
    assert str(info.value).startswith("--name: ")


@pytest.mark.parametrize("value", SAFE)
def test_check_name_accepts_plain_names(value):
    from negmine.names import check_name

    assert check_name(value, "--name") == value


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    base = tmp_path_factory.mktemp("names")
    run = base / "runs" / "run"
    result = invoke("ingest", "--data", small_beir(base / "data"), "--out", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize(
    "argv, option",
    [
        (("train", "--strategy", "none", "--name", "../../escaped"), "--name"),
        (("train", "--strategy", "none", "--name", "/tmp/escaped"), "--name"),
        (("train", "--strategy", "../../escaped", "--name", "ok"), "--strategy"),
        (("train", "--strategy", "none", "--name", "ok", "--fn-source", "../../escaped"), "--fn-source"),
        (("export", "--strategy", "../../escaped", "--out", "{base}/out.jsonl"), "--strategy"),
        (("estimate-fn", "--source", "../../escaped"), "--source"),
    ],
    ids=["train-name", "train-name-absolute", "train-strategy", "train-fn-source", "export-strategy", "estimate-fn-source"],
)
def test_the_cli_refuses_a_name_that_leaves_the_run(ingested, tmp_path, argv, option):
    import shutil

    run = tmp_path / "runs" / "run"
    shutil.copytree(ingested, run)
    before = tree_hashes(tmp_path)
    argv = [a.format(base=tmp_path) for a in argv]
    result = invoke(*argv, "--run", run, "--model", tmp_path / "no-model") if argv[0] == "train" else invoke(*argv, "--run", run)
    assert result.exit_code == BAD_INPUT, result.output
    assert f"{option}: " in result.output and "not a safe name" in result.output, result.output
    assert tree_hashes(tmp_path) == before
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs" / "escaped").exists()


@pytest.mark.parametrize(
    "stage, params, key",
    [
        ("train", {"name": "../../escaped"}, "name"),
        ("train", {"name": "ok", "strategy": "../escaped"}, "strategy"),
        ("sample", {"strategy": "topk", "source": "a/b"}, "source"),
    ],
    ids=["train-name", "train-strategy", "sample-source"],
)
def test_a_recipe_name_that_leaves_the_run_is_refused_before_any_stage(tmp_path, stage, params, key):
    lines = "\n".join(f'{k} = "{v}"' for k, v in params.items())
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[[stages]]\nstage = "ingest"\n\n[[stages]]\nstage = "{stage}"\n{lines}\n')
    out = tmp_path / "runs" / "run"
    result = invoke("run", recipe, "--data", small_beir(tmp_path / "data"), "--out", out)
    assert result.exit_code == BAD_INPUT, result.output
    assert key in result.output and "not a safe name" in result.output, result.output
    assert not out.exists()
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs" / "escaped").exists()


def test_the_python_api_refuses_an_unsafe_model_name(ingested):
    from negmine.rundir import Run
    from negmine.runners import train_stage

    with pytest.raises(BadInputError, match="not a safe name"):
        train_stage(Run.open(ingested), "../../escaped", "no-model", strategy=None)
    assert not (ingested.parent / "escaped").exists()
