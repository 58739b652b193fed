"""Declarative pipelines: a TOML recipe lists stages and their parameters; ``negmine run`` executes them.

A recipe (``pipelines/*.toml``)::

    description = "SimANS (Zhou et al., EMNLP 2022): ..."

    [[stages]]
    stage = "retrieve"          # ingest runs first unless the recipe lists it
    source = "dense"

    [[stages]]
    stage = "sample"
    strategy = "simans"

    [refresh]                   # optional (ANCE): after the stages, re-encode with the trained model and rerun them
    rounds = 2

Every stage key is a parameter of that stage's runner (``STAGES``); its default lives in the runner's
signature, so a recipe names only what it changes, and with no parameters it runs what
``negmine mine`` runs. Unknown keys are errors that list the valid ones. ``--set NAME=VALUE`` overrides
NAME in every stage that takes it (e.g. ``--set source=bm25 --set model=PATH``).

Refresh rounds (ANCE, Xiong et al., ICLR 2021: negatives re-mined with the model being trained): round
0 runs in the output directory; round i runs in ``OUT/round-i``, a full run directory whose ``model``
parameters (retrieve, cluster, train) are the model trained in round i - 1. Every round is resumable:
rerunning the recipe skips each stage whose config and inputs are unchanged.
"""

from __future__ import annotations

import inspect
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from negmine.errors import BadInputError
from negmine.names import check_name
from negmine.progress import prefix as progress_prefix
from negmine.runners import (
    cluster_stage, duplicates_stage, estimate_fn_stage, export_stage, fn_scores_stage, ingest_stage, rescore_stage, retrieve_stage, sample_stage,
    train_stage,
)
from negmine.runners.base import DEFAULT_MODEL

STAGES: dict[str, Callable] = {
    "ingest": ingest_stage, "retrieve": retrieve_stage, "rescore": rescore_stage, "cluster": cluster_stage, "duplicates": duplicates_stage,
    "fn-scores": fn_scores_stage, "sample": sample_stage, "train": train_stage, "estimate-fn": estimate_fn_stage, "export": export_stage,
}


RECIPE_KEYS = ("description", "stages", "refresh")
REFRESH_KEYS = ("rounds",)
_HIDDEN = ("run", "data", "force", "progress", "loaded")
PATH_KEYS = {"name", "strategy", "source"}  # stage parameters that become file names (negmine.names)
MODEL_STAGES = ("retrieve", "cluster", "train")  # stages whose `model` a refresh round replaces


def stage_keys(stage: str) -> list[str]:
    """The parameters a recipe may give ``stage`` (its runner's signature)."""
    return sorted(n for n in inspect.signature(STAGES[stage]).parameters if n not in _HIDDEN)


def stage_defaults(stage: str) -> dict:
    """Each recipe key of ``stage`` and its default (the runner's), ``inspect.Parameter.empty`` where it has none."""
    return {n: p.default for n, p in inspect.signature(STAGES[stage]).parameters.items() if n not in _HIDDEN}


def _checks() -> dict[str, Callable]:
    """Per stage, what its runner would refuse in its options, checked before any stage of a pipeline runs."""
    from negmine.rescore import check_teachers
    from negmine.retrieve.models import check_model, resolve_prompt
    from negmine.runners.retrieve import check_retrieve
    from negmine.runners.sample import check_sample

    return {
        "retrieve": check_retrieve,
        "sample": check_sample,
        "cluster": lambda model=DEFAULT_MODEL, query_prompt=None, query_prompt_name=None, **_: (
            check_model(model), resolve_prompt(model, "query", query_prompt, query_prompt_name)),
        "rescore": lambda teacher=None, **_: check_teachers(teacher) if teacher is not None else None,
    }


def check_stages(stages: list[tuple[str, dict]]) -> None:
    """Bad options of any stage fail here, before the first stage runs (no half-mined run for a typo)."""
    checks = _checks()
    for name, params in stages:
        if name in checks:
            checks[name](**params)


def apply_options(stages: list[tuple[str, dict]], options: dict, option_name=lambda key: f"--{key.replace('_', '-')}") -> None:
    """Give each option to every stage that takes it (by the runner's parameter name); an option no stage takes is bad input."""
    for key, value in options.items():
        takers = [params for name, params in stages if key in stage_keys(name)]
        if not takers:
            raise BadInputError(option_name(key), f"no stage of this pipeline takes it; its stages take {sorted({k for n, _ in stages for k in stage_keys(n)})}")
        for params in takers:
            params[key] = value


def mine_recipe(strategy: str = "simans", teacher: str | list[str] | None = None, teacher_max_length: int | None = None, dedup: bool = True,
                max_fn_prob: float | None = None, **options) -> "Recipe":
    """The built-in recipe ``negmine mine`` runs: ingest → retrieve → [rescore] → [cluster] → [duplicates] → [fn-scores] → sample.

    ``teacher`` (one spec, or a list of teachers scored side by side) adds the rescore stage
    (``teacher_max_length`` tokens per pair); strategies that need
    topics (tas-balanced) add the cluster stage; ``dedup`` (default) finds text duplicates of the
    labelled positives and ``max_fn_prob`` fits the false-negative model, both kept out of the
    negatives. Every other option goes to each stage whose runner takes it (``seed`` to cluster,
    fn-scores and sample; ``model`` to retrieve and cluster; ``source`` to retrieve, rescore,
    fn-scores and sample ...), so a recipe file can say all that ``mine`` can.
    """
    from negmine.sample import NEEDS

    if strategy == "denoise" and teacher is None:
        raise BadInputError("--teacher", "strategy 'denoise' needs a teacher; pass --teacher cross-encoder:NAME_OR_PATH (or bi-encoder:NAME_OR_PATH)")
    stages: list[tuple[str, dict]] = [("ingest", {}), ("retrieve", {})]
    if teacher is not None:
        stages.append(("rescore", {"teacher": teacher} | ({"max_length": teacher_max_length} if teacher_max_length is not None else {})))
    elif teacher_max_length is not None:
        raise BadInputError("--teacher-max-length", "applies to the rescore stage, which runs with --teacher only")
    if "clusters" in NEEDS.get(strategy, ()):
        stages.append(("cluster", {}))
    if dedup:
        stages.append(("duplicates", {}))
    if max_fn_prob is not None:
        stages.append(("fn-scores", {}))
    stages.append(("sample", {"strategy": strategy} | ({} if dedup else {"dedup": False}) | ({"max_fn_prob": max_fn_prob} if max_fn_prob is not None else {})))
    apply_options(stages, options)
    return Recipe(Path("mine"), "negmine mine", stages)


@dataclass
class Recipe:
    path: Path
    description: str
    stages: list[tuple[str, dict]]
    rounds: int = 0
    trained: list[str] = field(default_factory=list)  # names of the train stages (refresh takes the last)


def _unknown(where: str, key: str, valid) -> BadInputError:
    return BadInputError(where, f"unknown key {key!r}; valid keys are {sorted(valid)}")


def parse_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    """Read and validate a recipe; ``overrides`` (NAME → value) apply to every stage that takes NAME."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(path, "recipe file does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"not valid TOML ({exc})") from None
    for key in doc:
        if key not in RECIPE_KEYS:
            raise _unknown(str(path), key, RECIPE_KEYS)
    entries = doc.get("stages")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise BadInputError(path, "a recipe needs a [[stages]] list, each with stage = NAME")
    stages = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        name = entry.pop("stage", None)
        where = f"{path}, stages[{i}]"
        if name not in STAGES:
            raise BadInputError(where, f"unknown stage {name!r}; choose from {sorted(STAGES)}")
        valid = stage_keys(name)
        for key in entry:
            if key not in valid:
                raise _unknown(f"{where} ({name})", key, valid)
        if name == "sample" and isinstance(entry.get("params"), dict):
            from negmine.sample import STRATEGIES, strategy_params

            strategy = entry.get("strategy", "simans")
            if strategy not in STRATEGIES:
                raise BadInputError(f"{where} (sample)", f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
            for key in entry["params"]:
                if key not in strategy_params(strategy):
                    raise _unknown(f"{where} (sample, params of {strategy})", key, strategy_params(strategy))
        stages.append((name, entry))
    if stages[0][0] != "ingest":
        stages.insert(0, ("ingest", {}))
    refresh = doc.get("refresh", {})
    if not isinstance(refresh, dict):
        raise BadInputError(path, "[refresh] must be a table with rounds = N")
    for key in refresh:
        if key not in REFRESH_KEYS:
            raise _unknown(f"{path}, [refresh]", key, REFRESH_KEYS)
    rounds = refresh.get("rounds", 0)
    trained = [params.get("name") for name, params in stages if name == "train"]
    if not isinstance(rounds, int) or rounds < 0:
        raise BadInputError(f"{path}, [refresh]", f"rounds must be a whole number >= 0, got {rounds!r}")
    if rounds and not trained:
        raise BadInputError(f"{path}, [refresh]", "refresh rounds re-encode with the trained model; add a train stage")
    for name, params in stages:
        if name == "train" and "name" not in params:
            raise BadInputError(f"{path} (train)", "a train stage needs name = NAME (the model lands in RUN/models/NAME/final)")
        if name == "rescore" and "teacher" not in params and "teacher" not in (overrides or {}):
            raise BadInputError(f"{path} (rescore)", "a rescore stage needs teacher = 'cross-encoder:NAME_OR_PATH' (or --set teacher=...)")
    for key, value in (overrides or {}).items():
        takers = [params for name, params in stages if key in stage_keys(name)]
        if not takers:
            raise BadInputError("--set", f"no stage of {path} takes {key!r}; its stages take {sorted({k for n, _ in stages for k in stage_keys(n)})}")
        for params in takers:
            params[key] = value
    for name, params in stages:  # names that become file names inside the run directory
        for key in sorted(PATH_KEYS & params.keys()):
            check_name(params[key], f"{path} ({name}), {key}")
    return Recipe(path, doc.get("description", ""), stages, rounds, trained)


def parse_overrides(pairs: list[str], option: str = "--set") -> dict:
    """``NAME=VALUE`` strings (of ``option``) → dict; VALUE is JSON where it parses (numbers, true, null), a string otherwise."""
    overrides = {}
    for item in pairs or []:
        if "=" not in item:
            raise BadInputError(option, f"expected NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            overrides[name.replace("-", "_")] = json.loads(value)
        except ValueError:
            overrides[name.replace("-", "_")] = value
    return overrides


def round_dir(out: Path, index: int) -> Path:
    return out if index == 0 else out / f"round-{index}"


def run_recipe(recipe: Recipe, data_dir: str | Path, out: str | Path, force: bool = False, on_stage=None) -> list:
    """Run every stage of ``recipe`` (and its refresh rounds); each round's run directory is locked while it runs.

    Every stage's options are checked (:func:`check_stages`) before the first stage runs.
    """
    from negmine.rundir import Run
    from negmine.runners.base import StageResult

    check_stages(recipe.stages)
    out = Path(out)
    notify = on_stage or (lambda name: None)
    results: list[StageResult] = []
    model = None  # the model trained in the previous round
    for index in range(recipe.rounds + 1):
        run = Run.open(round_dir(out, index))
        prefix = "" if index == 0 else f"round-{index}/"
        with run.lock(), progress_prefix(prefix):
            for name, params in recipe.stages:
                params = dict(params)
                if model is not None and name in MODEL_STAGES:
                    params["model"] = model
                notify(prefix + name)
                if name == "ingest":
                    done = STAGES[name](run, data_dir, force=force, **params)
                else:
                    done = STAGES[name](run, force=force, **params)
                for result in done if isinstance(done, list) else [done]:
                    results.append(StageResult(prefix + result.stage, result.skipped, result.entry))
        if recipe.trained:
            model = str(run.path / "models" / recipe.trained[-1] / "final")
    return results
