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


def rescore_stage(run: Run, teacher: str | list[str], source: str = "dense", max_length: int | None = 512, batch_size: int = 32, progress=None, force: bool = False,
                  chunk_size: int = RESCORE_CHUNK, engine: str = "local", ray_address: str | None = None, ray_actors: int | None = None,
                  teacher_precision: str = "float32") -> StageResult:
    """Teacher scores (negmine.rescore) of candidates_<source> and positive_scores_<source>.

    ``teacher`` is one spec or a list of them (``LABEL=SPEC`` to name one; negmine.teachers): their scores
    are stored side by side, the first in ``ce_score``/``ce_prob``. Teachers are loaded one at a time.
    ``teacher_precision`` is a bi-encoder teacher's (negmine.retrieve.device.PRECISIONS; the local engine only).

    ``engine='ray'`` scores the parts on Ray actors (negmine.engines.ray.RayTeacher); same outputs.
    """
    from negmine.errors import BadInputError, StageError

    check_engine(engine)
    if source not in SOURCES:
        raise BadInputError("--source", f"unknown value {source!r}; choose from {sorted(SOURCES)}")
    from negmine.teachers import parse_teachers

    specs = parse_teachers(teacher)
    inputs = table_paths(run, f"candidates_{source}", f"positive_scores_{source}", "corpus", "queries")
    for path in inputs[:2]:
        if not path.exists():
            raise StageError(f"{path}: missing; run `negmine {source} --run {run.path}` first")
    outputs = table_paths(run, f"scored_candidates_{source}", f"scored_positives_{source}")
    single = len(specs) == 1 and specs[0].label == "t1"  # the layout (and config) of a one-teacher run
    teacher_id = _teacher_id(specs[0].spec) if single else [f"{s.label}={_teacher_id(s.spec)}" for s in specs]
    config = {"teacher": teacher_id, "source": source, "max_length": max_length}  # batch size does not change the output
    precision = teacher_precision
    if precision != "float32":
        if engine != "local":
            raise BadInputError("--teacher-precision", f"runs on the local engine; the ray engine's teacher runs in float32, got {precision!r}", field="teacher_precision")
        precision = check_precision(precision, engine)
    config |= unless_default(chunk_size=(chunk_size, RESCORE_CHUNK), precision=(precision, "float32"))

    def compute():
        import numpy as np

        from negmine.rescore import load_teacher, scored_tables, teacher_pairs, teacher_scores
        from negmine.teachers import described

        candidates = read_table(inputs[0], CANDIDATES, "candidates")
        positives = read_table(inputs[1], POSITIVE_SCORES, "positive_scores")
        corpus = read_table(inputs[2], CORPUS, "corpus")
        queries = read_table(inputs[3], QUERIES, "queries")
        pairs, query_texts, doc_texts = teacher_pairs(candidates, positives, corpus, queries)
        scores, kinds, names, ray = [], [], [], {}
        for spec in specs:  # one teacher in memory at a time
            if engine == "ray":
                from negmine.engines.ray import RayTeacher

                loaded = RayTeacher(spec.spec, max_length, ray_address, ray_actors)
            else:
                loaded = load_teacher(spec.spec, max_length, precision=precision)
            try:
                scores.append(teacher_scores(loaded, query_texts, doc_texts, batch_size, chunk_size, progress=progress))
            finally:
                if engine == "ray":
                    for key, value in actor_stats(loaded.pool).items():
                        ray[key] = ray.get(key, 0) + value
                    loaded.close()
            kinds.append(loaded.kind)
            names.append(loaded.name)
            del loaded
        teachers = described(specs, kinds, names)
        scored, scored_pos = scored_tables(candidates, positives, pairs, scores, teachers)
        write_table(scored, outputs[0], scored.schema)
        write_table(scored_pos, outputs[1], scored_pos.schema)

        def mean(table, column):
            return round(float(np.mean(table.column(column).to_numpy())), 4) if table.num_rows else None

        for entry in teachers:
            entry |= {"candidate_prob_mean": mean(scored, entry["prob_column"]), "positive_prob_mean": mean(scored_pos, entry["prob_column"])}
        return {
            "teacher_kind": kinds[0],
            "candidates": scored.num_rows,
            "positives": scored_pos.num_rows,
            "candidate_prob_mean": teachers[0]["candidate_prob_mean"],
            "positive_prob_mean": teachers[0]["positive_prob_mean"],
        } | ({} if single else {"teachers": teachers}) | ran_on(engine) | ray

    return run_stage(run, f"rescore.{source}", config, inputs, outputs, compute, force)
