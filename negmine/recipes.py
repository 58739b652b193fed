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

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def ingest(run, data_dir, format: str = "auto", split: str = "train", force: bool = False):
    from negmine.stages import ingest_stage

    return ingest_stage(run, data_dir, format, split, force=force)


def retrieve(
    run, source: str = "dense", k: int = 100, model: str = DEFAULT_MODEL, max_seq_length: int | None = 256, dtype: str = "float16",
    batch_size: int = 64, threads: int = 1, bm25_backend: str = "pyserini", fusion: str = "rrf", force: bool = False, precision: str = "auto",
):
    """Candidates from bm25, dense (embed + search) or both fused (hybrid), as ``negmine mine`` retrieves them."""
    from negmine import stages

    if source not in stages.SOURCES:
        raise BadInputError("source", f"unknown candidate source {source!r}; choose from {sorted(stages.SOURCES)}")
    results = []
    if source in ("bm25", "hybrid"):
        results.append(stages.bm25_stage(run, k=k, threads=threads, backend=bm25_backend, force=force))
    if source in ("dense", "hybrid"):
        results.extend(stages.dense_stage(run, model, k, max_seq_length, dtype, batch_size, threads=threads, force=force, precision=precision))
    if source == "hybrid":
        results.append(stages.hybrid_stage(run, fusion, force=force))
    return results


def rescore(run, teacher: str, source: str = "dense", max_length: int | None = 512, batch_size: int = 32, force: bool = False):
    from negmine.stages import rescore_stage

    return rescore_stage(run, teacher, source, max_length, batch_size, force=force)


def cluster(run, model: str = DEFAULT_MODEL, n_clusters: int | None = None, seed: int = 42, max_seq_length: int | None = 256, batch_size: int = 64, force: bool = False):
    from negmine.stages import cluster_stage

    return cluster_stage(run, model, n_clusters, seed, max_seq_length, batch_size, force)


def sample(run, strategy: str = "simans", source: str = "dense", num_negatives: int = 7, seed: int = 42, params: dict | None = None, force: bool = False):
    from negmine.stages import sample_stage

    return sample_stage(run, strategy, source, num_negatives, seed, params, force)


def train(
    run, name: str, model: str = DEFAULT_MODEL, method: str = "mnrl", strategy: str | None = "simans", loss: str = "mnrl", num_negatives: int = 1,
    random_negatives: int = 1, batching: str = "no-duplicates", epochs: int = 1, batch_size: int = 32, learning_rate: float = 2e-5, seed: int = 42,
    max_seq_length: int | None = 256, adore_k: int = 200, force: bool = False,
):
    from negmine.training_stages import train_stage

    return train_stage(run, model, name, method, strategy, loss, num_negatives, random_negatives, batching, epochs, batch_size, learning_rate, seed, max_seq_length, adore_k, force)


def estimate_fn(run, source: str = "dense", threshold: float | None = None, audit: int = 0, seed: int = 42, n_boot: int = 1000, force: bool = False):
    from negmine.stages import estimate_fn_stage

    return estimate_fn_stage(run, source, threshold, None, audit, None, seed, n_boot, force)


def export(run, strategy: str = "simans", format: str = "sentence-transformers", out: str = "export.jsonl", layout: str = "n-tuple", num_negatives: int | None = None, force: bool = False):
    """Write an export (negmine.export) into the run directory; ``out`` is relative to it."""
    from negmine.export import export_run
    from negmine.stages import StageResult

    stats = export_run(run.path, strategy, format, run.path / out, layout, num_negatives)
    return StageResult(f"export.{format}", False, {"stats": stats})


STAGES: dict[str, Callable] = {
    "ingest": ingest,
    "retrieve": retrieve,
    "rescore": rescore,
    "cluster": cluster,
    "sample": sample,
    "train": train,
    "estimate-fn": estimate_fn,
    "export": export,
}
RECIPE_KEYS = ("description", "stages", "refresh")
REFRESH_KEYS = ("rounds",)
_HIDDEN = ("run", "data_dir", "force")
PATH_KEYS = {"name", "strategy", "source"}  # stage parameters that become file names (negmine.names)
MODEL_STAGES = ("retrieve", "cluster", "train")  # stages whose `model` a refresh round replaces


def stage_keys(stage: str) -> list[str]:
    """The parameters a recipe may give ``stage`` (its runner's signature)."""
    return sorted(n for n in inspect.signature(STAGES[stage]).parameters if n not in _HIDDEN)


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
    """Run every stage of ``recipe`` (and its refresh rounds); each round's run directory is locked while it runs."""
    from negmine.run import Run
    from negmine.stages import StageResult

    out = Path(out)
    notify = on_stage or (lambda name: None)
    results: list[StageResult] = []
    model = None  # the model trained in the previous round
    for index in range(recipe.rounds + 1):
        run = Run.open(round_dir(out, index))
        prefix = "" if index == 0 else f"round-{index}/"
        with run.lock():
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
