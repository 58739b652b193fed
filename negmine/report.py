"""``negmine report``: one self-contained HTML page about a run, with its plots as PNG beside it.

The page opens with what made the run: the model, each strategy's parameters and seed, and the negmine
version; its stage table lists the stages in pipeline order. Plots are drawn at one width and scale to
the page.

Plots (matplotlib, Agg backend, embedded as base64 so the page travels alone):
score histograms of positives vs negatives per strategy (``retriever_score`` / ``pos_retriever_score``),
negatives per query, source-rank distribution of the sampled negatives, false-negative estimates per
rank bucket (when ``fn_report.parquet`` exists) and stage wall times from ``manifest.json``.
matplotlib is an optional dependency: ``pip install 'negmine[report]'``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from negmine.errors import BadInputError, StageError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise StageError("negmine report needs matplotlib; pip install 'negmine[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


WIDTH = 10.0  # inches of every plot: 1,000 px at 100 dpi, shown at the page's width


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def _grid(plt, n: int, cols: int = 3):
    cols = min(cols, max(n, 1))
    rows = -(-max(n, 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, 3.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def score_histograms(negatives: dict, plt) -> bytes:
    """Small multiples (3 per row): positives vs sampled negatives of each strategy on shared bins."""
    fig, axes = _grid(plt, len(negatives))
    for ax, (strategy, table) in zip(axes, negatives.items()):
        neg = [v for v in table.column("retriever_score").to_pylist() if v is not None]
        pos_pairs = {(q, p): s for q, p, s in zip(*(table.column(c).to_pylist() for c in ("query_id", "pos_id", "pos_retriever_score"))) if s is not None}
        pos = list(pos_pairs.values())
        if neg or pos:
            ax.hist([neg, pos], bins=30, density=True, label=[f"negatives ({len(neg)})", f"positives ({len(pos)})"], color=["tab:red", "tab:green"], alpha=0.6, histtype="stepfilled")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no retriever scores\n(corpus draws)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(strategy)
        ax.set_xlabel("retriever score")
        ax.set_ylabel("density")
    fig.tight_layout()
    return _png(fig)


def negatives_per_query(negatives: dict, plt) -> bytes:
    """Grouped bars: for each count of negatives per query, how many queries each strategy gave it."""
    from collections import Counter

    per_strategy = {s: Counter(Counter(t.column("query_id").to_pylist()).values()) for s, t in negatives.items()}
    counts = sorted({c for hist in per_strategy.values() for c in hist})
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    width = 0.8 / max(len(per_strategy), 1)
    for i, (strategy, hist) in enumerate(per_strategy.items()):
        ax.bar([j + i * width for j in range(len(counts))], [hist.get(c, 0) for c in counts], width, label=strategy)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(counts))], [str(c) for c in counts])
    ax.set_xlabel("negatives per query")
    ax.set_ylabel("queries")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def rank_distribution(negatives: dict, plt) -> bytes:
    """Small multiples: where in the retrieved list each strategy's negatives came from."""
    fig, axes = _grid(plt, len(negatives))
    for ax, (strategy, table) in zip(axes, negatives.items()):
        column = table.column("source_rank").to_pylist()
        ranks = [r for r in column if r is not None]
        drawn = len(column) - len(ranks)
        if ranks:
            top = max(ranks)
            ax.hist(ranks, bins=range(1, top + 2, max(1, top // 40)), color="tab:blue")
        else:
            ax.text(0.5, 0.5, "no source ranks", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(strategy + (f" (+{drawn} from corpus)" if drawn else ""))
        ax.set_xlabel("source rank")
        ax.set_ylabel("negatives")
    fig.tight_layout()
    return _png(fig)


def _strategy_table(negatives: dict) -> str:
    """One row per strategy: sizes, negatives per query, scores and how many negatives outscore their positive."""
    import numpy as np
    from collections import Counter

    rows = []
    for strategy, table in negatives.items():
        per_query = list(Counter(table.column("query_id").to_pylist()).values())
        cols = {c: table.column(c).to_pylist() for c in ("retriever_score", "pos_retriever_score", "source_rank")}
        scored = [(n, p) for n, p in zip(cols["retriever_score"], cols["pos_retriever_score"]) if n is not None and p is not None]
        ranks = [r for r in cols["source_rank"] if r is not None]

        def cell(values, fmt="{:.3f}"):
            return fmt.format(float(np.mean(values))) if values else "–"

        rows.append(
            f"<tr><td>{html.escape(strategy)}</td><td>{table.num_rows}</td><td>{len(per_query)}</td>"
            f"<td>{min(per_query, default=0)} / {int(np.median(per_query)) if per_query else 0} / {max(per_query, default=0)}</td>"
            f"<td>{cell([n for n, _ in scored])}</td><td>{cell([p for _, p in scored])}</td>"
            f"<td>{cell([100.0 * (n > p) for n, p in scored], '{:.1f}%')}</td>"
            f"<td>{int(np.median(ranks)) if ranks else '–'}</td></tr>"
        )
    head = "<tr><th>strategy</th><th>negatives</th><th>queries</th><th>per query min / median / max</th><th>mean negative score</th><th>mean positive score</th><th>negatives above their positive</th><th>median source rank</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def false_negative_plot(report, plt) -> bytes:
    rows = [r for r in report.to_pylist() if r["bucket"] != "all" and r["rate"] is not None]
    fig, ax = plt.subplots(figsize=(WIDTH, 3.2))
    series = sorted({(r["strategy"], r["method"]) for r in rows})
    buckets = list(dict.fromkeys(r["bucket"] for r in rows))
    width = 0.8 / max(len(series), 1)
    for i, key in enumerate(series):
        by_bucket = {r["bucket"]: r for r in rows if (r["strategy"], r["method"]) == key}
        xs = [j + i * width for j, b in enumerate(buckets) if b in by_bucket]
        rates = [by_bucket[b]["rate"] for b in buckets if b in by_bucket]
        low = [by_bucket[b]["rate"] - (by_bucket[b]["ci_low"] or by_bucket[b]["rate"]) for b in buckets if b in by_bucket]
        high = [(by_bucket[b]["ci_high"] or by_bucket[b]["rate"]) - by_bucket[b]["rate"] for b in buckets if b in by_bucket]
        ax.bar(xs, rates, width, yerr=[low, high], capsize=2, label=f"{key[0]} ({key[1]})")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(buckets))], buckets)
    ax.set_xlabel("source-rank bucket")
    ax.set_ylabel("estimated false-negative rate")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def stage_timings(manifest: dict, plt) -> bytes:
    stages = pipeline_order(manifest)
    fig, ax = plt.subplots(figsize=(WIDTH, 0.35 * len(stages) + 1))
    ax.barh([name for name, _ in stages], [entry.get("wall_s") or 0 for _, entry in stages], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    return _png(fig)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>negmine report — {title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em auto;padding:0 2em;max-width:1100px}}
img{{display:block;width:100%;height:auto}}
table{{border-collapse:collapse;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}th:first-child,td:first-child{{text-align:left}}
dl.run{{display:grid;grid-template-columns:max-content auto;gap:2px 1em}}dl.run dt{{font-weight:bold}}dl.run dd{{margin:0}}
p.absent{{background:#f6f6f6;border-left:4px solid #bbb;padding:0.5em 1em}}</style>
</head><body>
<h1>negmine report</h1>
{header}
{sections}
</body></html>
"""

# The order the stages of a run run in (negmine mine, then the stages that follow it); a stage named
# NAME.SUFFIX (sample.simans, rescore.dense, train.x) sorts as NAME, then by suffix.
PIPELINE = ("ingest", "bm25", "embed", "dense", "hybrid", "rescore", "cluster", "duplicates", "fn-scores", "sample", "estimate-fn", "train", "export")


def pipeline_order(manifest: dict) -> list[tuple[str, dict]]:
    """The manifest's stages in pipeline order (stages the order does not know last, by name)."""

    def key(item):
        base, _, suffix = item[0].partition(".")
        return (PIPELINE.index(base) if base in PIPELINE else len(PIPELINE), base, suffix)

    return sorted(manifest.get("stages", {}).items(), key=key)


def _stage_table(manifest: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{entry.get('wall_s', 0):.2f}</td><td>{entry.get('peak_rss_mb', 0):.0f}</td></tr>"
        for name, entry in pipeline_order(manifest)
    )
    return f"<table><tr><th>stage</th><th>wall s</th><th>peak RSS MB</th></tr>{rows}</table>"


def _params(config: dict) -> str:
    params = {k: v for k, v in config.items() if k not in ("strategy", "params", "seed")} | (config.get("params") or {})
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def _header(run_dir: Path, manifest: dict) -> str:
    """What made the run: its model(s), each strategy's parameters and seed, the negmine version."""
    from negmine import __version__

    stages = dict(pipeline_order(manifest))
    models = list(dict.fromkeys(e["config"]["model"] for n, e in stages.items() if n in ("embed", "dense", "cluster") and e.get("config", {}).get("model")))
    retrieval = [n for n in ("bm25", "dense", "hybrid") if n in stages]
    rows = [("run", f"<code>{html.escape(str(run_dir))}</code>"),
            ("model", ", ".join(f"<code>{html.escape(m)}</code>" for m in models) or ("none (BM25 only)" if retrieval else "none yet"))]
    embed = stages.get("embed", {}).get("stats", {})
    if embed.get("precision"):
        rows.append(("encoder", html.escape(f"{embed['precision']}" + (f" on {embed['device']}" if embed.get("device") else "") + f", stored as {embed.get('dtype')}")))
    if retrieval:
        rows.append(("retrieval", html.escape(", ".join(retrieval))))
    for name, entry in stages.items():
        if name.startswith("sample."):
            config = entry.get("config", {})
            rows.append((f"strategy {html.escape(name.removeprefix('sample.'))}", html.escape(f"{_params(config)}; seed {config.get('seed')}")))
    versions = {e.get("versions", {}).get("negmine") for e in stages.values()} - {None}
    made = ", ".join(sorted(versions))
    rows.append(("negmine", html.escape(__version__ + (f" (stages made by {made})" if versions and versions != {__version__} else ""))))
    return '<dl class="run">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _fn_absent(run_dir: Path, negatives: dict) -> str:
    run = html.escape(str(run_dir))
    if not negatives:
        return '<p class="absent">No false-negative estimates: sample negatives first (<code>negmine mine</code> or <code>negmine sample</code>).</p>'
    return (
        '<p class="absent">No false-negative estimates in this run yet. <code>negmine estimate-fn --run '
        f"{run}</code> writes them (fn_report.parquet) from any of: a teacher's scores (<code>negmine rescore --run {run} --teacher "
        "cross-encoder:NAME</code>, or <code>negmine mine --teacher ...</code>), qrels with more judgements (<code>--qrels-full FILE</code>), "
        "a labelled audit (<code>--audit N</code>, then <code>--audit-labels FILE</code>). Rerun <code>negmine report</code> afterwards.</p>"
    )


def build_report(run_dir: str | Path, out: str | Path) -> dict:
    """Write ``out`` (HTML, atomically) and its PNGs beside it (``<stem>_<plot>.png``); return what it wrote."""
    from negmine.io import atomic_path, read_table
    from negmine.schemas import FN_REPORT, NEGATIVES

    run_dir, out = Path(run_dir), Path(out)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise BadInputError(manifest_path, "not a negmine run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    negatives = {p.stem.removeprefix("negatives_"): read_table(p, NEGATIVES, "negatives") for p in sorted(run_dir.glob("negatives_*.parquet"))}
    plt = _pyplot()
    plots: list[tuple[str, str, bytes]] = []
    if negatives:
        plots += [
            ("scores", "Retriever scores: positives vs sampled negatives", score_histograms(negatives, plt)),
            ("negatives_per_query", "Negatives per query", negatives_per_query(negatives, plt)),
            ("ranks", "Source rank of the sampled negatives", rank_distribution(negatives, plt)),
        ]
    if (run_dir / "fn_report.parquet").exists():
        plots.append(("false_negatives", "Estimated false-negative rate per rank bucket (95% interval)", false_negative_plot(read_table(run_dir / "fn_report.parquet", FN_REPORT, "fn_report"), plt)))
    plots.append(("timings", "Stage wall times (manifest.json)", stage_timings(manifest, plt)))
    written = []
    sections = []
    for key, title, png in plots:
        if key == "timings" and not (run_dir / "fn_report.parquet").exists():  # where the false-negative plot would be
            sections.append("<h2>Estimated false-negative rate</h2>\n" + _fn_absent(run_dir, negatives))
        path = out.with_name(f"{out.stem}_{key}.png")
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        written.append(str(path))
        encoded = base64.b64encode(png).decode("ascii")
        sections.append(f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" src="data:image/png;base64,{encoded}">')
    if negatives:
        sections.insert(0, "<h2>Strategies</h2>\n" + _strategy_table(negatives))
    else:
        sections.insert(0, "<p>No <code>negatives_*.parquet</code> in this run yet.</p>")
    sections.append("<h2>Stages</h2>\n" + _stage_table(manifest))
    with atomic_path(out) as tmp:
        tmp.write_text(_PAGE.format(title=html.escape(str(run_dir)), header=_header(run_dir, manifest), sections="\n".join(sections)), encoding="utf-8")
    return {"out": str(out), "plots": written, "strategies": sorted(negatives)}
