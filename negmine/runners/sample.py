"""``negmine sample``: a strategy's negatives from a candidate pool, likely false negatives kept out."""

from __future__ import annotations

from pathlib import Path

from negmine.io import read_table, write_table
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
    CLUSTERS,
    CORPUS,
    NEGATIVES,
    POSITIVE_SCORES,
    QRELS,
    QUERIES,
)


def check_sample(strategy: str = "simans", source: str = "dense", num_negatives: int = 7, params: dict | None = None, max_fn_prob: float | None = None,
                 teacher_name: str | None = None, **_) -> None:
    """Everything :func:`sample_stage` would refuse in its options, checked before any stage of a pipeline runs."""
    from negmine.errors import BadInputError, check_at_least, check_choice
    from negmine.sample import STRATEGIES, strategy_params
    from negmine.teachers import check_label

    check_label(teacher_name)

    check_choice("--strategy", strategy, STRATEGIES)
    check_choice("--source", source, SOURCES)
    check_at_least("--num-negatives", num_negatives)
    if max_fn_prob is not None and not 0.0 <= max_fn_prob <= 1.0:
        raise BadInputError("--max-fn-prob", f"must lie in [0, 1], got {max_fn_prob}", field="max_fn_prob")
    allowed = strategy_params(strategy)
    for key in params or {}:
        if key not in allowed:
            raise BadInputError("--param", f"strategy {strategy!r} has no parameter {key!r}; its parameters are {sorted(allowed)}")


def sample_stage(run: Run, strategy: str = "simans", source: str = "dense", num_negatives: int = 7, seed: int = 42, params: dict | None = None, force: bool = False,
                 dedup: bool = True, max_fn_prob: float | None = None, teacher_name: str | None = None) -> StageResult:
    """Sample ``strategy``'s negatives from candidates_<source> → negatives_<strategy>.parquet.

    Likely false negatives are kept out of every strategy's pool, as labelled positives are: with
    ``dedup``, documents whose text duplicates a labelled positive (duplicates.parquet, made here when
    missing); with ``max_fn_prob``, candidates whose P(false negative) is above it (fn_scores_<source>,
    made here with the label-free model when missing; see negmine.fn_model). With several teachers
    (negmine.teachers) ``teacher_name`` picks the one whose scores fill ``ce_score`` and feed denoise and
    simans ``score='ce'`` (None: the first).
    """
    from negmine.errors import BadInputError, StageError
    from negmine.sample import NEEDS, likely_false_negatives, sample_negatives, strategy_params

    check_sample(strategy, source, num_negatives, params, max_fn_prob, teacher_name)
    params = {**strategy_params(strategy), **(params or {})}
    needs = NEEDS.get(strategy, ())  # corpus (random, star) and/or clusters (tas-balanced)
    inputs = table_paths(run, f"candidates_{source}", f"positive_scores_{source}", "qrels", "queries", *needs)
    for path in inputs[:2]:
        if not path.exists():
            raise StageError(f"{path}: missing; run `negmine {source} --run {run.path}` first")
    if "clusters" in needs and not table_path(run, "clusters").exists():
        raise StageError(f"{table_path(run, 'clusters')}: missing; strategy {strategy!r} needs it, run `negmine cluster --run {run.path}` first")
    outputs = table_paths(run, f"negatives_{strategy}")
    # teacher scores from `negmine rescore`, when present: they fill ce_score / pos_ce_score and feed denoise, simans score='ce'
    scored = table_paths(run, f"scored_candidates_{source}", f"scored_positives_{source}")
    has_teacher = all(p.exists() for p in scored)
    if strategy == "denoise" and not has_teacher:
        raise StageError(f"{scored[0]}: missing; strategy 'denoise' needs teacher scores, run `negmine rescore --run {run.path} --source {source} --teacher ...` first")
    if teacher_name is not None and not has_teacher:
        raise BadInputError("--teacher-name", f"{scored[0]} is missing: the run has no teacher scores of the {source} candidates to choose from")
    inputs += scored if has_teacher else []
    if strategy == "denoise" and params.get("pseudo_positives"):
        outputs += table_paths(run, f"pseudo_positives_{strategy}")
    filters = []
    if dedup:
        from negmine.runners.false_negatives import duplicates_stage

        duplicates_stage(run)
        filters += table_paths(run, "duplicates")
    if max_fn_prob is not None:
        from negmine.runners.false_negatives import fn_scores_stage

        if not table_path(run, f"fn_scores_{source}").exists():
            fn_scores_stage(run, source, seed=seed)
        filters += table_paths(run, f"fn_scores_{source}")
    inputs += filters
    config = {"strategy": strategy, "source": source, "num_negatives": num_negatives, "seed": seed, "params": params}
    config |= unless_default(dedup=(dedup, True), max_fn_prob=(max_fn_prob, None), teacher_name=(teacher_name, None))

    def compute():
        candidates = read_table(inputs[0], CANDIDATES, "candidates")
        positives = read_table(inputs[1], POSITIVE_SCORES, "positive_scores")
        qrels = read_table(inputs[2], QRELS, "qrels")
        queries = read_table(inputs[3], QUERIES, "queries")
        extra = {name: read_table(table_path(run, name), {"corpus": CORPUS, "clusters": CLUSTERS}[name], name) for name in needs}
        if has_teacher:
            from negmine.schemas import SCORED_CANDIDATES, SCORED_POSITIVES
            from negmine.teachers import read_scored, select_teacher

            for key, path, base in (("scored_candidates", scored[0], SCORED_CANDIDATES), ("scored_positives", scored[1], SCORED_POSITIVES)):
                extra[key] = select_teacher(*read_scored(path, base, key), teacher_name)
        from negmine.schemas import DUPLICATES, FN_SCORES

        duplicates = read_table(table_path(run, "duplicates"), DUPLICATES, "duplicates") if dedup else None
        fn_scores = read_table(table_path(run, f"fn_scores_{source}"), FN_SCORES, "fn_scores") if max_fn_prob is not None else None
        exclusions = likely_false_negatives(qrels, duplicates, fn_scores, max_fn_prob)
        negatives, stats = sample_negatives(candidates, positives, qrels, queries, strategy, num_negatives, seed, **extra, exclude=exclusions, **params)
        write_table(negatives, outputs[0], NEGATIVES)
        stats["candidates_kept_out"] = exclusions.count(candidates)
        if strategy == "denoise":
            stats.update(_denoise_report(extra["scored_candidates"], qrels, params, outputs[1] if len(outputs) > 1 else None))
        return {**stats, **score_summary(negatives)}

    return run_stage(run, f"sample.{strategy}", config, inputs, outputs, compute, force)


def _denoise_report(scored_candidates, qrels, params: dict, pseudo_path: Path | None) -> dict:
    """Likely false negatives of the denoise strategy (teacher prob above positive_above in the top window)."""
    from negmine.sample.denoise import likely_false_negatives
    from negmine.schemas import PSEUDO_POSITIVES

    pseudo = likely_false_negatives(scored_candidates, qrels, params["top"], params["positive_above"])
    if pseudo_path is not None:
        write_table(pseudo, pseudo_path, PSEUDO_POSITIVES)
    return {
        "likely_false_negatives": pseudo.num_rows,
        "queries_with_likely_false_negatives": len(set(pseudo.column("query_id").to_pylist())),
    }


def score_summary(negatives) -> dict:
    """Distribution of negative vs positive retriever scores, and the share of negatives above their positive."""
    import numpy as np

    neg = negatives.column("retriever_score").to_numpy(zero_copy_only=False).astype(np.float64)
    pos = negatives.column("pos_retriever_score").to_numpy(zero_copy_only=False).astype(np.float64)
    if len(neg) == 0:
        return {}

    def quantiles(x):
        x = x[~np.isnan(x)]
        if not len(x):
            return None
        return {q: round(float(np.quantile(x, p)), 4) for q, p in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))} | {"mean": round(float(x.mean()), 4)}

    # negatives drawn off the candidates (random, star) have no retriever score nor source rank
    ranks = negatives.column("source_rank").to_numpy(zero_copy_only=False).astype(np.float64)
    ok = ~np.isnan(pos) & ~np.isnan(neg)
    return {
        "negative_score": quantiles(neg),
        "positive_score": quantiles(pos),
        "share_negative_above_positive": round(float(np.mean(neg[ok] > pos[ok])), 4) if ok.any() else None,
        "mean_source_rank": round(float(np.mean(ranks[~np.isnan(ranks)])), 2) if (~np.isnan(ranks)).any() else None,
    }
