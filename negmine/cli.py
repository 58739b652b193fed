"""The negmine command line: a thin Typer layer over the stage runners.

Each command opens the run directory, takes its lock, calls one runner, prints a summary on stderr
(or JSON on stdout with --json) and maps NegmineError to its exit code (see negmine.errors).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console

from negmine.errors import NegmineError

app = typer.Typer(
    name="negmine",
    help="Mine hard negatives for dense retrievers. Every stage reads and writes Parquet in a run directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

RunOpt = typer.Option(..., "--run", "--out", "-o", help="Run directory (created if missing).")
ForceOpt = typer.Option(False, "--force", help="Rerun even when the manifest says the outputs are up to date.")
JsonOpt = typer.Option(False, "--json", help="Print the summary as JSON on stdout.")
ThreadsOpt = typer.Option(1, "--threads", help="Threads for search (does not change the output).")
ModelOpt = typer.Option(
    "sentence-transformers/all-MiniLM-L6-v2", "--model", "-m", help="sentence-transformers model: hub name or local path."
)


def _guarded(fn: Callable[[], object]):
    try:
        return fn()
    except NegmineError as exc:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]: outputs written so far are complete; rerun the same command to resume")
        raise typer.Exit(3) from None


def _with_run(run_dir: Path, body: Callable, as_json: bool, title: str):
    from negmine.run import Run
    from negmine.summary import render, summary_dict

    def go():
        run = Run.open(run_dir)
        with run.lock():
            results = body(run)
        results = results if isinstance(results, list) else [results]
        if as_json:
            sys.stdout.write(json.dumps(summary_dict(results), indent=2, sort_keys=True) + "\n")
        else:
            render(err, results, title=f"{title} — {run_dir}")
        return results

    return _guarded(go)


def _parse_params(pairs: list[str]) -> dict:
    from negmine.errors import BadInputError

    params = {}
    for item in pairs or []:
        if "=" not in item:
            raise BadInputError("--param", f"expected NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            params[name.replace("-", "_")] = json.loads(value)
        except ValueError:
            params[name.replace("-", "_")] = value
    return params


def _strategy_params(a, b, kernel, positive_score, range_min, range_max, extra) -> dict:
    given = {
        "a": a,
        "b": b,
        "kernel": kernel,
        "positive_score": positive_score,
        "range_min": range_min,
        "range_max": range_max,
    }
    return {k: v for k, v in given.items() if v is not None} | extra


@app.command()
def ingest(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory (BEIR, MS MARCO or Parquet layout)."),
    run_dir: Path = RunOpt,
    fmt: str = typer.Option("auto", "--format", help="auto | beir | msmarco | parquet"),
    split: str = typer.Option("train", "--split", help="qrels split whose positives are mined."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Read and validate a dataset into corpus, queries and qrels tables."""
    from negmine.stages import ingest_stage

    _with_run(run_dir, lambda run: ingest_stage(run, data, fmt, split, force), as_json, "ingest")


@app.command()
def bm25(
    run_dir: Path = RunOpt,
    k: int = typer.Option(100, "--k", help="Candidates per query."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1."),
    b: float = typer.Option(0.4, "--b", help="BM25 b."),
    threads: int = ThreadsOpt,
    backend: str = typer.Option("pyserini", "--backend", help="pyserini (Lucene) | bm25s"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """BM25 candidates (pyserini/Lucene by default) and the BM25 score of every positive."""
    from negmine.stages import bm25_stage

    _with_run(run_dir, lambda run: bm25_stage(run, k, k1, b, threads, backend, force), as_json, "bm25")


@app.command()
def dense(
    run_dir: Path = RunOpt,
    model: str = ModelOpt,
    k: int = typer.Option(100, "--k", help="Candidates per query."),
    max_seq_length: int = typer.Option(256, "--max-seq-length", help="Tokens per text."),
    dtype: str = typer.Option("float16", "--dtype", help="Stored corpus embeddings: float16 | float32"),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoding batch size."),
    threads: Optional[int] = typer.Option(None, "--threads", help="faiss threads (default: all cores)."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Dense candidates: encode (cached embeddings), faiss inner-product search, score every positive."""
    from negmine.stages import dense_stage

    _with_run(run_dir, lambda run: dense_stage(run, model, k, max_seq_length, dtype, batch_size, threads, force=force), as_json, "dense")


TeacherOpt = typer.Option(
    None,
    "--teacher",
    help="Teacher: cross-encoder:NAME_OR_PATH (or a plain NAME_OR_PATH; ce_prob = sigmoid(logit)) or "
    "bi-encoder:NAME_OR_PATH (ce_score = cosine, ce_prob = (cos+1)/2, not calibrated). Thresholds apply to ce_prob.",
)


@app.command()
def rescore(
    run_dir: Path = RunOpt,
    teacher: str = typer.Option(..., "--teacher", help=TeacherOpt.help),
    source: str = typer.Option("dense", "--source", help="Candidate pool to score: dense | bm25"),
    max_length: int = typer.Option(512, "--max-length", help="Tokens per (query, document) pair."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per forward pass."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Score every candidate and labelled positive with a teacher; writes scored_candidates_/scored_positives_<source>.parquet (ce_score, ce_prob)."""
    from rich.progress import Progress

    from negmine.stages import rescore_stage

    def body(run):
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("rescoring pairs", total=None)
            return rescore_stage(run, teacher, source, max_length, batch_size, progress=lambda n: bar.advance(task, n), force=force)

    _with_run(run_dir, body, as_json, "rescore")


@app.command()
def sample(
    run_dir: Path = RunOpt,
    strategy: str = typer.Option("simans", "--strategy", "-s", help="topk | range | simans"),
    source: str = typer.Option("dense", "--source", help="Candidate pool: dense | bm25"),
    num_negatives: int = typer.Option(7, "--num-negatives", "-n", help="Negatives per (query, positive)."),
    seed: int = typer.Option(42, "--seed", help="Random seed (same seed, same bytes)."),
    a: Optional[float] = typer.Option(None, "--a", help="SimANS: kernel sharpness a (default 0.5)."),
    b: Optional[float] = typer.Option(None, "--b", help="SimANS: offset b; the kernel peaks at s = s+ + b (default 0)."),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="SimANS: gaussian | laplace"),
    positive_score: Optional[str] = typer.Option(None, "--positive-score", help="SimANS: pair | random | mean | max"),
    range_min: Optional[int] = typer.Option(None, "--range-min", help="range: first rank (default 10)."),
    range_max: Optional[int] = typer.Option(None, "--range-max", help="range: last rank (default 50)."),
    param: List[str] = typer.Option([], "--param", help="Any other strategy parameter, NAME=VALUE."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Sample negatives from a candidate pool with a strategy; writes negatives_<strategy>.parquet."""
    from negmine.stages import sample_stage

    def body(run):
        params = _strategy_params(a, b, kernel, positive_score, range_min, range_max, _parse_params(param))
        return sample_stage(run, strategy, source, num_negatives, seed, params, force)

    _with_run(run_dir, body, as_json, "sample")


@app.command()
def mine(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory (BEIR, MS MARCO or Parquet layout)."),
    run_dir: Path = RunOpt,
    strategy: str = typer.Option("simans", "--strategy", "-s", help="topk | range | simans"),
    source: str = typer.Option("dense", "--source", help="Candidate pool: dense | bm25"),
    fmt: str = typer.Option("auto", "--format", help="auto | beir | msmarco | parquet"),
    split: str = typer.Option("train", "--split", help="qrels split whose positives are mined."),
    model: str = ModelOpt,
    k: int = typer.Option(100, "--k", help="Candidates per query."),
    num_negatives: int = typer.Option(7, "--num-negatives", "-n", help="Negatives per (query, positive)."),
    seed: int = typer.Option(42, "--seed", help="Random seed."),
    threads: int = ThreadsOpt,
    max_seq_length: int = typer.Option(256, "--max-seq-length", help="Tokens per text for the bi-encoder."),
    dtype: str = typer.Option("float16", "--dtype", help="Stored corpus embeddings: float16 | float32"),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoding batch size."),
    bm25_backend: str = typer.Option("pyserini", "--bm25-backend", help="pyserini | bm25s"),
    a: Optional[float] = typer.Option(None, "--a", help="SimANS: kernel sharpness a (default 0.5)."),
    b: Optional[float] = typer.Option(None, "--b", help="SimANS: offset b (default 0)."),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="SimANS: gaussian | laplace"),
    positive_score: Optional[str] = typer.Option(None, "--positive-score", help="SimANS: pair | random | mean | max"),
    range_min: Optional[int] = typer.Option(None, "--range-min", help="range: first rank (default 10)."),
    range_max: Optional[int] = typer.Option(None, "--range-max", help="range: last rank (default 50)."),
    param: List[str] = typer.Option([], "--param", help="Any other strategy parameter, NAME=VALUE."),
    teacher: Optional[str] = TeacherOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Run every stage a strategy needs (ingest, retrieval, sample), skipping those already up to date."""
    from negmine.pipeline import mine as mine_pipeline

    def body(run):
        params = _strategy_params(a, b, kernel, positive_score, range_min, range_max, _parse_params(param))
        with err.status("mining") as status:
            return mine_pipeline(
                run, data, strategy, source, fmt, split, model, k, num_negatives, seed, threads,
                max_seq_length, dtype, batch_size, bm25_backend, params, force,
                on_stage=lambda name: status.update(f"[bold]{name}[/] …"), teacher=teacher,
            )

    _with_run(run_dir, body, as_json, f"mine --strategy {strategy}")


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL; every Parquet table of the run is a view named after its file."),
    run_dir: Path = typer.Option(..., "--run", "-r", help="Run directory."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
):
    """Query the run's tables with DuckDB."""
    from negmine.sql import FORMATS, query as run_query

    def go():
        from negmine.errors import BadInputError

        if fmt not in FORMATS:
            raise BadInputError("--format", f"unknown format {fmt!r}; choose from {sorted(FORMATS)}")
        columns, rows = run_query(run_dir, query)
        _print_rows(columns, rows, fmt)

    _guarded(go)


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


def main():
    app()


if __name__ == "__main__":
    main()
