"""Runners of the false-negative control: ``duplicates`` (text duplicates of labelled positives) and
``fn-scores`` (P(false negative) of every candidate). Each reads the run's tables, calls one pure
function (negmine.duplicates, negmine.fn_model), writes its outputs and records the manifest; the sample
stage reads both to keep likely false negatives out of every strategy's negatives."""

from __future__ import annotations

from pathlib import Path

from negmine.errors import BadInputError, StageError
from negmine.io import atomic_path, read_table, write_table
from negmine.rundir import Run
from negmine.runners.base import (
    SOURCES,
    StageResult,
    run_stage,
    table_path,
    table_paths,
    unless_default,
)
from negmine.schemas import (
    CANDIDATES,
    CORPUS,
    DUPLICATES,
    FN_SCORES,
    POSITIVE_SCORES,
    QRELS,
)

DUPLICATE_THRESHOLD = 0.8  # word-shingle Jaccard at or above which two texts are near duplicates
OTHER_SOURCE = {"dense": "bm25", "bm25": "dense"}  # whose ranks give the agreement signal


def duplicates_stage(run: Run, threshold: float = DUPLICATE_THRESHOLD, force: bool = False) -> StageResult:
    """Documents whose text duplicates a labelled positive's → duplicates.parquet (negmine.duplicates)."""
    if not 0.0 < threshold <= 1.0:
        raise BadInputError("--dup-threshold", f"must lie in (0, 1], got {threshold}", field="dup_threshold")
    inputs = table_paths(run, "corpus", "qrels")
    for path in inputs:
        if not path.exists():
            raise StageError(f"{path}: missing; run `negmine ingest --run {run.path}` first")
    outputs = table_paths(run, "duplicates")
    config = {"threshold": threshold}

    def compute():
        from negmine.duplicates import find_duplicates

        corpus = read_table(inputs[0], CORPUS, "corpus")
        qrels = read_table(inputs[1], QRELS, "qrels")
        table, stats = find_duplicates(corpus, qrels, threshold)
        write_table(table, outputs[0], DUPLICATES)
        return stats

    return run_stage(run, "duplicates", config, inputs, outputs, compute, force)


def _optional(run: Run, *names: str) -> list[Path]:
    paths = table_paths(run, *names)
    return paths if all(p.exists() for p in paths) else []


def fn_scores_stage(run: Run, source: str = "dense", method: str = "pu", labels: str | Path | None = None, seed: int = 42,
                    force: bool = False) -> StageResult:
    """P(false negative) of every candidate of ``source`` (negmine.fn_model) → fn_scores_<source>.parquet and
    the fitted model, fn_model_<source>.json.

    Uses every signal the run holds: the source's scores and ranks, every teacher's scores when the
    source was rescored, the other retriever's ranks when it ran, and duplicates.parquet. ``method``
    ``pu`` learns from the labelled positives alone; ``labels`` (a CSV ``query_id, neg_id, label``)
    fits on audited labels instead.
    """
    from negmine.fn_model import FIT_METHODS

    if source not in SOURCES:
        raise BadInputError("--source", f"unknown value {source!r}; choose from {sorted(SOURCES)}")
    if labels is not None:
        method = "labels"
    if method not in FIT_METHODS:
        raise BadInputError("--fn-model", f"unknown false-negative model {method!r}; choose from {sorted(FIT_METHODS)}", field="fn_model")
    base, teacher, other, duplicates = signal_inputs(run, source)
    inputs = base + teacher + other + duplicates + ([Path(labels)] if labels is not None else [])
    outputs = [table_path(run, f"fn_scores_{source}"), run.file(f"fn_model_{source}.json")]
    config = {"source": source, "method": method, "seed": seed} | unless_default(labels=(str(labels) if labels else None, None))

    def compute():
        import pyarrow.parquet as pq

        from negmine import fn_model
        from negmine.estimate_fn import read_audit_labels

        features, positives = signals(run, source)
        retrieved = positives.num_rows - positives.column("rank").null_count
        recall = retrieved / positives.num_rows if positives.num_rows else None
        audit = read_audit_labels(labels) if labels is not None else None
        model = fn_model.fit_model(features, method, audit, seed, corpus_size=pq.read_metadata(base[3]).num_rows, recall=recall)
        scores = fn_model.score_candidates(features, model)
        write_table(scores, outputs[0], FN_SCORES)
        with atomic_path(outputs[1]) as tmp:
            tmp.write_text(model.to_json())
        probs = scores.column("fn_prob").to_numpy()
        return {"method": method, "signals": features.names, "candidates": scores.num_rows, **model.stats,
                "above_0.5": int((probs > 0.5).sum()), "duplicates_of_own_positive": int(features.duplicate.sum())}

    return run_stage(run, f"fn-scores.{source}", config, inputs, outputs, compute, force)


def signal_inputs(run: Run, source: str) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """(base tables, teacher tables, other retriever's tables, duplicates) of ``source`` that the run holds."""
    base = table_paths(run, f"candidates_{source}", f"positive_scores_{source}", "qrels", "corpus")
    for path in base[:2]:
        if not path.exists():
            raise StageError(f"{path}: missing; run `negmine {source} --run {run.path}` first")
    teacher = _optional(run, f"scored_candidates_{source}", f"scored_positives_{source}")
    other_name = OTHER_SOURCE.get(source)
    other = _optional(run, f"candidates_{other_name}", f"positive_scores_{other_name}") if other_name else []
    return base, teacher, other, _optional(run, "duplicates")


def signals(run: Run, source: str):
    """The false-negative signals (negmine.fn_model.Features) of ``source``'s candidates, and its positive scores."""
    from negmine import fn_model
    from negmine.schemas import SCORED_CANDIDATES, SCORED_POSITIVES

    base, teacher, other, duplicates = signal_inputs(run, source)
    positives = read_table(base[1], POSITIVE_SCORES, "positive_scores")
    extra = {}
    if teacher:  # every teacher's scores, side by side (negmine.teachers)
        from negmine.teachers import read_scored

        extra["scored_candidates"] = read_scored(teacher[0], SCORED_CANDIDATES, "scored_candidates")[0]
        extra["scored_positives"] = read_scored(teacher[1], SCORED_POSITIVES, "scored_positives")[0]
    if other:
        extra["other_candidates"] = read_table(other[0], CANDIDATES, "candidates")
        extra["other_positive_scores"] = read_table(other[1], POSITIVE_SCORES, "positive_scores")
    if duplicates:
        extra["duplicates"] = read_table(duplicates[0], DUPLICATES, "duplicates")
    candidates = read_table(base[0], CANDIDATES, "candidates")
    qrels = read_table(base[2], QRELS, "qrels")
    return fn_model.build_features(candidates, positives, qrels, **extra), positives


def load_fn_model(run: Run, source: str):
    """The fitted model of ``fn_scores_stage`` for ``source``, or None when it has not run."""
    from negmine.fn_model import FnModel

    path = run.file(f"fn_model_{source}.json")
    if not path.exists():
        return None
    import json

    return FnModel.from_dict(json.loads(path.read_text()))
