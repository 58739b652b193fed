"""Defaults live once, in the runners' signatures: a CLI option sets a runner parameter only when given,
and the default its help shows is the runner's."""

import inspect

import pytest
import typer

from negmine.cli import app
from negmine.runners import (
    bm25_stage, cluster_stage, dense_stage, duplicates_stage, estimate_fn_stage, fn_scores_stage, hybrid_stage, ingest_stage, rescore_stage,
    retrieve_stage, sample_stage, train_stage,
)
from negmine.sample import STRATEGIES, strategy_params

# the runners each command's options go to
RUNNERS = {
    "ingest": [ingest_stage], "bm25": [bm25_stage], "dense": [dense_stage], "hybrid": [hybrid_stage], "rescore": [rescore_stage],
    "cluster": [cluster_stage], "sample": [sample_stage], "duplicates": [duplicates_stage], "fn-scores": [fn_scores_stage],
    "estimate-fn": [estimate_fn_stage], "train": [train_stage],
    "mine": [ingest_stage, retrieve_stage, rescore_stage, cluster_stage, fn_scores_stage, sample_stage],
}
RENAMED = {("mine", "teacher_max_length"): (rescore_stage, "max_length")}
NOT_RUNNER_OPTIONS = {"run_dir", "data", "as_json", "force", "param", "teacher"}


def commands() -> dict:
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in RUNNERS}


def runner_default(command: str, name: str):
    if (command, name) in RENAMED:
        runner, name = RENAMED[(command, name)]
        return inspect.signature(runner).parameters[name].default
    for runner in RUNNERS[command]:
        if name in inspect.signature(runner).parameters:
            return inspect.signature(runner).parameters[name].default
    for strategy in STRATEGIES:  # a dedicated strategy option (--a, --range-min ...)
        if name in strategy_params(strategy):
            return strategy_params(strategy)[name]
    raise LookupError(name)


CASES = [(name, param) for name, command in commands().items() for param in command.params
         if param.param_type_name == "option" and param.name not in NOT_RUNNER_OPTIONS]


@pytest.mark.parametrize(("command", "param"), CASES, ids=[f"{c}--{p.name}" for c, p in CASES])
def test_every_option_is_not_given_by_default_and_shows_the_runners_default(command, param):
    default = runner_default(command, param.name)  # every option sets a runner parameter of the same name
    if param.name == "name":  # train --name is required, as the runner's
        assert param.required and default is inspect.Parameter.empty
        return
    assert param.default is None, f"negmine {command} {param.opts[0]} has its own default {param.default!r}; it must defer to the runner's"
    shown = param.show_default
    if isinstance(shown, str):
        if isinstance(default, bool):
            assert shown == (param.opts[0].lstrip("-").split("/")[0] if default else param.secondary_opts[0].lstrip("-"))
        else:
            assert shown == str(default), f"negmine {command} {param.opts[0]} shows default {shown}, the runner's is {default!r}"
    else:
        assert default is None or param.name in ("threads", "n_clusters"), f"negmine {command} {param.opts[0]} hides the default {default!r}"


def test_the_library_defaults_that_once_drifted_from_the_cli():
    assert inspect.signature(dense_stage).parameters["precision"].default == "auto"
    assert inspect.signature(train_stage).parameters["random_negatives"].default == 1
    from negmine.retrieve.embed import EMBED_CHUNK, embed_corpus

    assert inspect.signature(embed_corpus).parameters["chunk_size"].default == EMBED_CHUNK == inspect.signature(dense_stage).parameters["chunk_size"].default
