"""Commands around a mined run: query it (sql), train and evaluate on it, run a recipe, report and export it."""

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from negmine.cli.app import app, err, given, guarded, print_summary, with_run
from negmine.cli.options import ForceOpt, JsonOpt, opt


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL; every Parquet table of the run is a view named after its file."),
    run_dir: Path = typer.Option(..., "--run", "-r", help="Run directory."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
    allow_external: bool = typer.Option(
        False, "--allow-external", help="Lift the confinement: by default only statements that read (SELECT, DESCRIBE, SHOW, EXPLAIN) run, and only the run's own files are readable (no COPY TO, INSTALL/LOAD, ATTACH or SET)."
    ),
):
    """Query the run's tables with DuckDB (read-only and confined to the run directory unless --allow-external)."""
    from negmine.sql import FORMATS, query as run_query

    def go():
        from negmine.errors import BadInputError

        if fmt not in FORMATS:
            raise BadInputError("--format", f"unknown format {fmt!r}; choose from {sorted(FORMATS)}")
        columns, rows = run_query(run_dir, query, allow_external)
        _print_rows(columns, rows, fmt)

    guarded(go)


@app.command()
def train(
    run_dir: Path = typer.Option(..., "--run", "-r", help="Run directory holding the mined negatives."),
    name: str = typer.Option(..., "--name", help="Model name; saved to RUN/models/NAME/final."),
    model: Optional[str] = opt("--model", "-m", help="sentence-transformers model to start from: hub name or local path.", default="sentence-transformers/all-MiniLM-L6-v2"),
    method: Optional[str] = opt("--method", help="mnrl | star | adore", default="mnrl"),
    strategy: Optional[str] = opt("--strategy", "-s", help="Which negatives_<strategy> table; 'none' for in-batch only.", default="simans"),
    loss: Optional[str] = opt("--loss", help="mnrl | cached-mnrl (GradCache, large batches in small memory)", default="mnrl"),
    num_negatives: Optional[int] = opt("--num-negatives", "-n", help="Mined negatives per example.", default="1"),
    random_negatives: Optional[int] = opt("--random-negatives", help="star: random corpus negatives per example.", default="1"),
    batching: Optional[str] = opt("--batching", help="no-duplicates | tas-balanced (needs clusters)", default="no-duplicates"),
    epochs: Optional[int] = opt("--epochs", help="Passes over the training examples.", default="1"),
    batch_size: Optional[int] = opt("--batch-size", help="Examples per step.", default="32"),
    learning_rate: Optional[float] = opt("--lr", help="Learning rate.", default="2e-05"),
    seed: Optional[int] = opt("--seed", help="Seed of the example order and the random negatives.", default="42"),
    max_seq_length: Optional[int] = opt("--max-seq-length", help="Tokens per text.", default="256"),
    adore_k: Optional[int] = opt("--adore-k", help="adore: documents retrieved per query each step.", default="200"),
    mask_collisions: Optional[bool] = opt(
        "--mask-collisions/--no-mask-collisions", default="mask-collisions", rich_help_panel="In-batch masking",
        help="Leave out of each anchor's softmax the in-batch documents that are positives of its query (labelled, duplicates.parquet, likely false negatives).",
    ),
    fn_source: Optional[str] = opt("--fn-source", help="Which fn_scores_<source> table gives the likely false negatives to mask (used when the run has it).", default="dense", rich_help_panel="In-batch masking"),
    mask_fn_above: Optional[float] = opt("--mask-fn-above", help="Mask candidates whose fn_prob is above this.", default="0.5", rich_help_panel="In-batch masking"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Fine-tune a bi-encoder on the mined negatives (sentence-transformers Trainer; ADORE for --method adore)."""
    from negmine.runners import train_stage

    chosen = given(
        model=model, method=method, strategy=strategy, loss=loss, num_negatives=num_negatives, random_negatives=random_negatives, batching=batching,
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed, max_seq_length=max_seq_length, adore_k=adore_k,
        mask_collisions=mask_collisions, fn_source=fn_source, mask_fn_above=mask_fn_above,
    )
    if chosen.get("strategy") == "none":
        chosen["strategy"] = None
    with_run(run_dir, lambda run: train_stage(run, name, force=force, **chosen), as_json, "train")


@app.command()
def evaluate(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to evaluate (query encoder)."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Dataset directory (BEIR, MS MARCO or Parquet layout)."),
    split: str = typer.Option("test", "--split"),
    metric: List[str] = typer.Option([], "--metric", help="ir-measures names, repeatable (default nDCG@10, RR@10, R@100)."),
    doc_model: Optional[str] = typer.Option(None, "--doc-model", help="Separate document encoder (ADORE models)."),
    max_seq_length: int = typer.Option(256, "--max-seq-length"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Per-query results (Parquet); aggregate beside it as JSON."),
    compare: List[Path] = typer.Option([], "--compare", help="Two result files: paired t-test of the second against the first."),
):
    """nDCG@10 / MRR@10 / Recall@100 of a model on a test split, or --compare A B for a paired significance test."""
    from negmine.errors import BadInputError

    def go():
        if compare:
            if len(compare) != 2:
                raise BadInputError("--compare", "give exactly two result files")
            from negmine.runners import compare_results

            rows = compare_results(compare[0], compare[1], metric)
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return
        if not model or not data:
            raise BadInputError("--model", "evaluate needs --model and --data (or --compare A B)")
        from negmine.runners import evaluate_model

        result = evaluate_model(model, data, split, metric or ("nDCG@10", "RR@10", "R@100"), max_seq_length=max_seq_length, doc_model=doc_model, out=out)
        sys.stdout.write(json.dumps(result, indent=2) + "\n")

    guarded(go)


@app.command("run")
def run_pipeline(
    recipe: Path = typer.Argument(..., help="Pipeline file (pipelines/*.toml)."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory (BEIR, MS MARCO or Parquet layout)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (refresh rounds go to OUT/round-N)."),
    overrides: List[str] = typer.Option([], "--set", help="NAME=VALUE for every stage that takes NAME (e.g. --set source=bm25 --set model=PATH)."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Run the stages a pipeline file lists (a recipe such as pipelines/simans.toml), skipping those already up to date."""
    from negmine.recipes import parse_overrides, parse_recipe, run_recipe

    def go():
        parsed = parse_recipe(recipe, parse_overrides(overrides))
        import contextlib

        # stdout is for the --json summary: whatever a library prints goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            results = run_recipe(parsed, data, out, force)
        print_summary(results, as_json, f"run {recipe} — {out}")

    guarded(go)


@app.command()
def report(
    run_dir: Path = typer.Option(..., "--run", "-r", help="Run directory."),
    out: Path = typer.Option(..., "--out", "-o", help="HTML file; its PNG plots are written beside it (<stem>_<plot>.png)."),
    as_json: bool = JsonOpt,
):
    """A self-contained HTML report of a run: score histograms, negatives per query, ranks, false negatives, stage timings."""
    from negmine.report import build_report

    def go():
        written = build_report(run_dir, out)
        if as_json:
            sys.stdout.write(json.dumps(written, indent=2, sort_keys=True) + "\n")
        else:
            err.print(f"report: {out} ({len(written['plots'])} plots)", highlight=False)

    guarded(go)


@app.command()
def export(
    run_dir: Path = typer.Option(..., "--run", "-r", help="Run directory holding negatives_<strategy>.parquet."),
    strategy: Optional[str] = typer.Option(None, "--strategy", "-s", help="Which negatives_<strategy> table to export (default: the run's only one)."),
    fmt: str = typer.Option("sentence-transformers", "--format", "-f", help="sentence-transformers | flagembedding | tevatron"),
    out: str = typer.Option(..., "--out", "-o", help="Output file (*.parquet or *.jsonl for sentence-transformers, *.jsonl otherwise); '-' streams JSONL to stdout."),
    layout: Optional[str] = typer.Option(
        None, "--layout",
        help="sentence-transformers: n-tuple (default) | triplet | labeled-pair | labeled-list (mine_hard_negatives' output_format). "
             "tevatron: passages (default) | ids (document ids, with the corpus in OUT's <stem>.corpus.jsonl).",
    ),
    num_negatives: Optional[int] = typer.Option(None, "--num-negatives", "-n", help="sentence-transformers n-tuple: negative columns (default: the widest pair; shorter pairs dropped); labeled-list: most negatives per row."),
    group_ids: Optional[bool] = typer.Option(None, "--group-ids/--no-group-ids", help="Add query_id, the documents' ids and positive_ids (for masking in-batch false negatives). Default: on for flagembedding and tevatron, off for sentence-transformers (its trainer would read them as texts)."),
    scores: Optional[str] = typer.Option(
        None, "--scores",
        help="Add scores for distillation: retriever (the scores the negatives were mined with) | teacher (negmine rescore's). "
             "sentence-transformers: a scores column as mine_hard_negatives(output_scores=True) writes it (MarginMSELoss); "
             "flagembedding: pos_scores/neg_scores; tevatron: a score per passage. Default: none.",
    ),
    source: Optional[str] = typer.Option(None, "--source", help="The candidate pool whose scores --scores reads: dense | bm25 | hybrid (default: the one the negatives were sampled from)."),
    as_json: bool = JsonOpt,
):
    """Write the negatives as training data for sentence-transformers, FlagEmbedding or Tevatron (text joined from corpus/queries), with scores on request."""
    from negmine.runners.export import export_run

    def go():
        stats = export_run(run_dir, strategy, fmt, out, layout, num_negatives, group_ids, scores, source)
        if as_json and out != "-":
            sys.stdout.write(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        elif not as_json:
            dropped = stats.get("pairs_dropped_short")
            note = f" ({dropped} pairs short of {num_negatives or 'the widest'} negatives dropped)" if dropped else ""
            note += f", {stats['scores']} scores" if scores else ""
            note += f", corpus → {stats['corpus_out']}" if "corpus_out" in stats else ""
            err.print(f"export {fmt}: {stats['rows']:,} rows → {out}{note}", highlight=False)

    guarded(go)


def _print_rows(columns, rows, fmt):
    import csv

    try:
        if fmt == "csv":
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(rows)
        elif fmt == "json":
            for row in rows:
                sys.stdout.write(json.dumps(dict(zip(columns, row)), default=str) + "\n")
        else:
            from rich.table import Table

            table = Table(*columns)
            for row in rows:
                table.add_row(*("" if v is None else str(v) for v in row))
            Console().print(table)
        sys.stdout.flush()
    except BrokenPipeError:  # `negmine sql ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
