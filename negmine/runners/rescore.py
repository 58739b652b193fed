"""``negmine rescore``: teacher scores of every candidate and labelled positive."""

from __future__ import annotations

from negmine.io import read_table, write_table
from negmine.rundir import Run
from negmine.runners.base import (
    SOURCES,
    StageResult,
    actor_stats,
    check_engine,
    check_precision,
    model_id,
    ran_on,
    run_stage,
    table_paths,
    unless_default,
)
from negmine.schemas import CANDIDATES, CORPUS, POSITIVE_SCORES, QUERIES


def _teacher_id(spec: str) -> str:
    from negmine.rescore import parse_teacher

    kind, name = parse_teacher(spec)
    return f"{kind}:{model_id(name)}"


RESCORE_CHUNK = 2048  # pairs (cross-encoder) or distinct texts (bi-encoder) per teacher call


def rescore_stage(run: Run, teacher: str, source: str = "dense", max_length: int | None = 512, batch_size: int = 32, progress=None, force: bool = False,
                  chunk_size: int = RESCORE_CHUNK, engine: str = "local", ray_address: str | None = None, ray_actors: int | None = None,
                  teacher_precision: str = "float32") -> StageResult:
    """Teacher scores (negmine.rescore) of candidates_<source> and positive_scores_<source>.

    ``teacher_precision`` is a bi-encoder teacher's (negmine.retrieve.device.PRECISIONS; the local engine only).

    ``engine='ray'`` scores the parts on Ray actors (negmine.engines.ray.RayTeacher); same outputs.
    """
    from negmine.errors import BadInputError, StageError
    from negmine.schemas import SCORED_CANDIDATES, SCORED_POSITIVES

    check_engine(engine)
    if source not in SOURCES:
        raise BadInputError("--source", f"unknown value {source!r}; choose from {sorted(SOURCES)}")
    inputs = table_paths(run, f"candidates_{source}", f"positive_scores_{source}", "corpus", "queries")
    for path in inputs[:2]:
        if not path.exists():
            raise StageError(f"{path}: missing; run `negmine {source} --run {run.path}` first")
    outputs = table_paths(run, f"scored_candidates_{source}", f"scored_positives_{source}")
    config = {"teacher": _teacher_id(teacher), "source": source, "max_length": max_length}  # batch size does not change the output
    precision = teacher_precision
    if precision != "float32":
        if engine != "local":
            raise BadInputError("--teacher-precision", f"runs on the local engine; the ray engine's teacher runs in float32, got {precision!r}", field="teacher_precision")
        precision = check_precision(precision, engine)
    config |= unless_default(chunk_size=(chunk_size, RESCORE_CHUNK), precision=(precision, "float32"))

    def compute():
        import numpy as np

        from negmine.rescore import load_teacher, rescore

        candidates = read_table(inputs[0], CANDIDATES, "candidates")
        positives = read_table(inputs[1], POSITIVE_SCORES, "positive_scores")
        corpus = read_table(inputs[2], CORPUS, "corpus")
        queries = read_table(inputs[3], QUERIES, "queries")
        if engine == "ray":
            from negmine.engines.ray import RayTeacher

            loaded = RayTeacher(teacher, max_length, ray_address, ray_actors)
        else:
            loaded = load_teacher(teacher, max_length, precision=precision)
        try:
            scored, scored_pos = rescore(candidates, positives, corpus, queries, loaded, batch_size, chunk_size, progress=progress)
        finally:
            if engine == "ray":
                loaded.close()
        write_table(scored, outputs[0], SCORED_CANDIDATES)
        write_table(scored_pos, outputs[1], SCORED_POSITIVES)
        probs = scored.column("ce_prob").to_numpy()
        return {
            "teacher_kind": loaded.kind,
            "candidates": scored.num_rows,
            "positives": scored_pos.num_rows,
            "candidate_prob_mean": round(float(probs.mean()), 4) if len(probs) else None,
            "positive_prob_mean": round(float(np.mean(scored_pos.column("ce_prob").to_numpy())), 4) if scored_pos.num_rows else None,
        } | ran_on(engine) | (actor_stats(loaded.pool) if engine == "ray" else {})

    return run_stage(run, f"rescore.{source}", config, inputs, outputs, compute, force)
