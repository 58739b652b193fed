"""``negmine estimate-fn``: the false-negative rate of every negatives table of a run."""

from __future__ import annotations

from pathlib import Path

from negmine.io import read_table, write_table
from negmine.rundir import Run
from negmine.runners.base import (
    StageResult,
    run_stage,
    table_path,
    table_paths,
)
from negmine.schemas import CORPUS, NEGATIVES, QRELS, QUERIES


def estimate_fn_stage(
    run: Run,
    source: str = "dense",
    threshold: float | None = None,
    teacher_name: str | None = None,
    qrels_full: str | Path | None = None,
    audit: int = 0,
    audit_labels: str | Path | None = None,
    seed: int = 42,
    n_boot: int = 1000,
    force: bool = False,
) -> StageResult:
    """False-negative estimates (negmine.estimate_fn) for every negatives_*.parquet of the run; writes fn_report.*

    The teacher estimate uses the teacher labelled ``teacher_name`` of the rescore tables (None: the first; negmine.teachers).
    """
    from negmine import estimate_fn as fn
    from negmine.errors import StageError
    from negmine.io import write_json
    from negmine.schemas import FN_REPORT, SCORED_CANDIDATES, SCORED_POSITIVES

    from negmine.names import check_name

    check_name(source, "--source")
    from negmine.teachers import check_label

    check_label(teacher_name)
    negatives_paths = sorted(run.path.glob("negatives_*.parquet"))
    if not negatives_paths:
        raise StageError(f"{run.path}: no negatives_*.parquet; run `negmine sample --run {run.path}` first")
    scored = table_paths(run, f"scored_candidates_{source}", f"scored_positives_{source}")
    has_teacher = all(p.exists() for p in scored)
    if teacher_name is not None and not has_teacher:
        from negmine.errors import BadInputError

        raise BadInputError("--teacher-name", f"{scored[0]} is missing: the run has no teacher scores of the {source} candidates to choose from")
    inputs = negatives_paths + (scored if has_teacher else []) + table_paths(run, "qrels")
    inputs += [Path(p) for p in (qrels_full, audit_labels) if p is not None] + (table_paths(run, "corpus", "queries") if audit else [])
    fn_model_file = run.file(f"fn_model_{source}.json")
    has_model = fn_model_file.exists()  # negmine fn-scores ran: its model estimates each strategy's rate too
    if has_model:
        from negmine.runners.false_negatives import signal_inputs

        inputs += [fn_model_file] + [p for group in signal_inputs(run, source) for p in group]
    outputs = [run.file("fn_report.parquet"), run.file("fn_report.json")] + ([run.file("fn_audit.csv"), run.file("fn_audit.parquet")] if audit else [])
    config = {"source": source, "threshold": threshold, "qrels_full": str(qrels_full) if qrels_full else None, "audit": audit,
              "audit_labels": str(audit_labels) if audit_labels else None, "seed": seed, "n_boot": n_boot}
    config |= {"teacher_name": teacher_name} if teacher_name is not None else {}

    def compute():
        import pyarrow.parquet as pq

        negatives = {p.stem.removeprefix("negatives_"): read_table(p, NEGATIVES, "negatives") for p in negatives_paths}
        qrels = read_table(table_path(run, "qrels"), QRELS, "qrels")
        teacher = None
        if has_teacher:
            from negmine.teachers import read_scored, select_teacher

            teacher = tuple(select_teacher(*read_scored(path, base, what), teacher_name)
                            for path, base, what in ((scored[0], SCORED_CANDIDATES, "scored_candidates"), (scored[1], SCORED_POSITIVES, "scored_positives")))
        full = fn.read_qrels_file(qrels_full) if qrels_full is not None else None
        labels = fn.read_audit_labels(audit_labels) if audit_labels is not None else None
        fn_features = None
        if has_model:
            from negmine.runners.false_negatives import load_fn_model, signals

            fn_features = (signals(run, source)[0], load_fn_model(run, source))
        rows, summary = [], {}
        for strategy, table in negatives.items():
            entry = {"negatives": table.num_rows, "score_ratio": fn.score_ratio(table)}
            methods = []
            if teacher is not None:
                teacher_rows, entry["teacher_unscored"] = fn.teacher_estimate(table, *teacher, threshold, n_boot, seed)
                methods.append(teacher_rows)
            if full is not None:
                label_rows, entry["judged_queries"] = fn.label_estimate(table, full, qrels, n_boot, seed)
                methods.append(label_rows)
            if labels is not None:
                methods.append(fn.audit_estimate(table, labels))
            if fn_features is not None:
                methods.append(fn.model_estimate(table, *fn_features, n_boot, seed))
            for method_rows in methods:
                rows.extend(method_rows)
                overall = method_rows[0]
                entry[overall["method"]] = {k: overall[k] for k in ("negatives", "false_negatives", "rate", "ci_low", "ci_high")}
            summary[strategy] = entry
        report = fn.report_table(rows)
        write_table(report, outputs[0], FN_REPORT)
        write_json({"strategies": summary, "rows": rows, "config": config}, outputs[1])
        if audit:
            import pyarrow.csv as pacsv

            sample = fn.audit_sample(negatives, read_table(table_path(run, "corpus"), CORPUS, "corpus"), read_table(table_path(run, "queries"), QUERIES, "queries"), audit, seed)
            from negmine.io import atomic_path

            with atomic_path(outputs[2]) as tmp:
                pacsv.write_csv(sample, tmp)
            with atomic_path(outputs[3]) as tmp:
                import pyarrow.parquet as pq

                pq.write_table(sample, tmp)
        used = {}
        if has_teacher:
            from negmine.teachers import teachers_of

            used = {"teacher_name": teacher_name or teachers_of(pq.read_schema(scored[0]))[0]["label"]}
        return {"teacher": has_teacher, "model": has_model, "strategies": summary} | used

    return run_stage(run, "estimate-fn", config, inputs, outputs, compute, force)
