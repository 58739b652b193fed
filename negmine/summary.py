"""The one-screen summary printed after a stage or a mine (on stderr; ``--json`` puts it on stdout).

A stage that was up to date shows "cached" and 0 s: no work was done for it in this command (the time
it took when it ran stays in the run's manifest, and in the JSON summary as ``recorded_wall_s``).
"""

from __future__ import annotations

from negmine.runners.base import StageResult


def summary_dict(results: list[StageResult]) -> dict:
    return {
        r.stage: {
            "skipped": r.skipped,
            "wall_s": 0.0 if r.skipped else r.entry.get("wall_s"),
            "recorded_wall_s": r.entry.get("wall_s"),
            "peak_rss_mb": None if r.skipped else r.entry.get("peak_rss_mb"),
            "stats": r.entry.get("stats", {}),
        }
        | ({"model": r.entry["config"]["model"]} if "model" in r.entry.get("config", {}) else {})
        for r in results
    }


def render(console, results: list[StageResult], title: str = "negmine") -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("stage", "status", "wall s", "peak RSS MB", "what it did"):
        table.add_column(column, justify="right" if column in ("wall s", "peak RSS MB") else "left")
    for r in results:
        stats = r.entry.get("stats", {})
        table.add_row(
            r.stage,
            "cached" if r.skipped else "ran",
            "0.0" if r.skipped else f"{r.entry.get('wall_s', 0):.1f}",
            "–" if r.skipped else f"{r.entry.get('peak_rss_mb', 0):.0f}",
            _describe(r.stage, stats),
        )
    console.print(table)
    for line in encoder_lines(results):
        console.print(line, highlight=False, soft_wrap=True)
    for r in results:
        stats = r.entry.get("stats", {})
        if r.stage.startswith("sample.") and "negative_score" in stats:
            scores = Table(title=f"retriever scores, {stats['strategy']}", title_justify="left")
            for column in ("", "mean", "p10", "p50", "p90"):
                scores.add_column(column, justify="right")
            for name in ("negative_score", "positive_score"):
                q = stats[name]
                scores.add_row(name.replace("_score", "s"), *(f"{q[k]:.4f}" for k in ("mean", "p10", "p50", "p90")))
            console.print(scores)
            console.print(
                f"negatives scoring above their positive: {stats['share_negative_above_positive']:.1%}; "
                f"mean source rank of negatives: {stats['mean_source_rank']}"
            )


def encoder_lines(results: list[StageResult]) -> list[str]:
    """The model of each stage that encoded texts (its prompt where one was used), once per model; the
    precision and device it ran in are in the embed row."""
    from rich.markup import escape

    lines, seen = [], set()
    for r in results:
        stage = r.stage.rsplit("/", 1)[-1]
        model = r.entry.get("config", {}).get("model")
        if not model or model in seen or not (stage in ("embed", "cluster") or stage.startswith("train.")):
            continue
        seen.add(model)
        lines.append(escape(f"model ({r.stage}): {model}" + _prompts(results)))
    return lines


def _prompts(results: list[StageResult]) -> str:
    """The query and document prompts the stages report (negmine.retrieve.models.resolve_prompt), if any."""
    found = {}
    for r in results:
        stats = r.entry.get("stats", {})
        for key, label in (("query_prompt", "query prompt"), ("corpus_prompt", "document prompt")):
            if stats.get(key) and label not in found:
                found[label] = stats[key]
    return "".join(f", {label} {text!r}" for label, text in found.items())


def _describe(stage: str, stats: dict) -> str:
    if stage == "ingest":
        return (
            f"{stats.get('documents', 0):,} docs, {stats.get('queries_with_positives', 0):,} queries with positives "
            f"({stats.get('queries_not_in_split', 0):,} not in split {stats.get('split')!r}, "
            f"{stats.get('queries_judged_without_positive', 0):,} without a positive: skipped), "
            f"{stats.get('positives', 0):,} positives"
            + (f"; {stats['qrels_duplicates_collapsed']:,} duplicate judgements collapsed" if stats.get("qrels_duplicates_collapsed") else "")
        )
    if stage in ("bm25", "dense"):
        text = f"{stats.get('candidates', 0):,} candidates for {stats.get('queries', 0):,} queries; positives retrieved {stats.get('recall', 0):.1%}"
        approx = next((key for key in stats if key.startswith("recall_vs_flat@")), None)
        if approx:
            text += f"; {stats['index']} index found {stats[approx]:.1%} of the exact top-{approx.split('@')[1]} ({stats['recall_sample_queries']:,} queries)"
        if "queries_per_s" in stats:
            text += f"; search {stats['queries_per_s']:,.0f} queries/s on {stats.get('threads', 1)} thread(s)"
        return text
    if stage == "embed":
        text = f"{stats.get('documents', 0):,} documents x {stats.get('dim')} ({stats.get('dtype')})"
        if "docs_per_s" in stats:
            text += f", {stats['docs_per_s']:,.1f} docs/s encoded"
            if "precision" in stats:
                text += f" in {stats['precision']}"
            if "backend" in stats:
                text += f" with {stats['backend']}"
            if "device" in stats:
                text += f" on {stats['device']}"
        if stats.get("documents_resumed"):
            text += f" ({stats['documents_resumed']:,} resumed from an interrupted run)"
        return text
    if stage == "hybrid":
        by_source = ", ".join(f"{source} {n:,}" for source, n in stats.get("candidates_by_source", {}).items())
        return (
            f"{stats.get('fusion')} fusion: {stats.get('candidates', 0):,} candidates for {stats.get('queries', 0):,} queries ({by_source}); "
            f"positives retrieved {stats.get('recall', 0):.1%}"
        )
    if stage.startswith("rescore."):
        teachers = stats.get("teachers")
        if teachers:
            each = "; ".join(f"{t['label']} ({t['kind']}) in {t['score_column']}, mean prob {_number(t.get('candidate_prob_mean'))}" for t in teachers)
            return f"{len(teachers)} teacher{'s' if len(teachers) > 1 else ''} scored {stats.get('candidates', 0):,} candidates and {stats.get('positives', 0):,} positives: {each}"
        return (
            f"{stats.get('teacher_kind')} teacher scored {stats.get('candidates', 0):,} candidates and {stats.get('positives', 0):,} positives; "
            f"mean prob {_number(stats.get('candidate_prob_mean'))} (candidates), {_number(stats.get('positive_prob_mean'))} (positives)"
        )
    if stage == "cluster":
        return (
            f"{stats.get('queries', 0):,} queries in {stats.get('clusters', 0):,} clusters "
            f"(size {stats.get('size_min', 0)}-{stats.get('size_max', 0)}, median {stats.get('size_median', 0)}; {stats.get('singletons', 0)} singletons)"
        )
    if stage == "estimate-fn":
        strategies = stats.get("strategies", {})
        return "estimated false-negative rate: " + ", ".join(f"{name} {_rate(entry)}" for name, entry in sorted(strategies.items()))
    if stage == "duplicates":
        return (
            f"{stats.get('docs_duplicating_a_positive', 0):,} documents duplicate a positive's text "
            f"({stats.get('exact_pairs', 0):,} exact, {stats.get('near_pairs', 0):,} near pairs) among {stats.get('documents', 0):,}"
        )
    if stage.startswith("fn-scores."):
        text = f"P(false negative) of {stats.get('candidates', 0):,} candidates ({stats.get('method')} model on {', '.join(stats.get('signals', []))}); "
        text += f"mean {_number(stats.get('mean_fn_prob'))}, {stats.get('above_0.5', 0):,} above 0.5"
        if stats.get("method") == "pu":
            text += f"; labelled share of positives c = {_number(stats.get('c'))}"
        return text
    if stage.startswith("sample."):
        text = (
            f"{stats.get('negatives', 0):,} negatives for {stats.get('queries', 0):,} queries / {stats.get('pairs', 0):,} pairs "
            f"({stats.get('negatives_per_query', 0)} per query, {stats.get('negatives_per_pair', 0)} per pair; "
            f"{stats.get('pairs_short_of_num_negatives', 0)} pairs short)"
        )
        kept_out = {k: v for k, v in stats.get("candidates_kept_out", {}).items() if v}
        if kept_out:
            text += "; kept out as likely false negatives: " + ", ".join(f"{n:,} {reason.replace('_', ' ')}" for reason, n in kept_out.items())
        return text
    return ""


def _number(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _rate(entry: dict) -> str:
    """The first estimate an fn-report entry has (audit, then labels, then model, then teacher)."""
    for method in ("audit", "labels", "model", "teacher"):
        estimate = entry.get(method)
        if estimate and estimate.get("rate") is not None:
            return f"{estimate['rate']:.1%} ({method})"
    return "–"
