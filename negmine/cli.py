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
from negmine.names import check_name

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
    from negmine.recipes import parse_overrides

    return parse_overrides(pairs, "--param")


def _strategy_params(extra: dict, **given) -> dict:
    """Strategy parameters: the dedicated options that were given (None = not given), then --param NAME=VALUE."""
    return {k: v for k, v in given.items() if v is not None} | extra


# Dedicated options of the main strategy parameters (the defaults live in the strategy functions' signatures).
MaxRelativeOpt = typer.Option(None, "--max-relative", help="positive-aware: keep negatives scoring below MAX_RELATIVE x s(q, d+) (default 0.95).")
MarginOpt = typer.Option(None, "--margin", help="positive-aware: keep negatives scoring below s(q, d+) - MARGIN.")
AOpt = typer.Option(None, "--a", help="SimANS: kernel sharpness a, on scores standardised per query, z = (s - pool mean) / pool std (--param scale=raw: on raw scores) (default 1.0).")
BOpt = typer.Option(None, "--b", help="SimANS: offset b; the kernel peaks at z = z+ + b, b pool standard deviations from the positive, below it when b < 0 (--param scale=raw: raw score units) (default -0.5).")
KernelOpt = typer.Option(None, "--kernel", help="SimANS: gaussian | laplace")
PositiveScoreOpt = typer.Option(None, "--positive-score", help="SimANS: pair | random | mean | max")
RangeMinOpt = typer.Option(None, "--range-min", help="range: first rank (default 10).")
RangeMaxOpt = typer.Option(None, "--range-max", help="range: last rank (default 50).")
ParamOpt = typer.Option([], "--param", help="Any other strategy parameter, NAME=VALUE.")
MaxScoreOpt = typer.Option(None, "--max-score", help="positive-aware: keep negatives scoring below MAX_SCORE.")
HardRatioOpt = typer.Option(None, "--hard-ratio", help="star: share of hard (retrieved) negatives, the rest random from the corpus (default 0.5).")
NStagesOpt = typer.Option(None, "--n-stages", help="curriculum: rank bands, easiest first (default 3).")
NBinsOpt = typer.Option(None, "--n-bins", help="tas-balanced: margin bins (default 10).")
ScoreOpt = typer.Option(None, "--score", help="simans: retriever | ce (teacher scores from rescore) (default retriever).")
NegativeBelowOpt = typer.Option(None, "--negative-below", help="denoise: keep top candidates whose teacher ce_prob is below this (default 0.1).")
PositiveAboveOpt = typer.Option(None, "--positive-above", help="denoise: a ce_prob above this marks a likely false negative (default 0.9).")
PseudoPositivesOpt = typer.Option(None, "--pseudo-positives/--no-pseudo-positives", help="denoise: write the likely false negatives to pseudo_positives_denoise.parquet.")
DedupOpt = typer.Option(True, "--dedup/--no-dedup", help="Keep documents whose text duplicates a labelled positive (exactly or nearly) out of the negatives.")
MaxFnProbOpt = typer.Option(
    None, "--max-fn-prob", help="Keep candidates whose P(false negative) is above this out of the negatives (fits the model of `negmine fn-scores` if the run has none)."
)
SourceOpt = typer.Option("dense", "--source", help="Candidate pool: dense | bm25 | hybrid (bm25 and dense fused; see `negmine hybrid`)")
EngineOpt = typer.Option("local", "--engine", help="local | ray: encode, search and rescore in this process or on a Ray cluster (identical outputs).")
RayAddressOpt = typer.Option(
    None, "--ray-address", envvar="RAY_ADDRESS", help="--engine ray: the cluster (ray://HEAD:10001, HEAD:6379 or auto); default: a local Ray cluster."
)
RayActorsOpt = typer.Option(
    None, "--ray-actors", envvar="NEGMINE_RAY_ACTORS", min=1,
    help="--engine ray: at most this many model actors (default: one per GPU, else one per CPU of the cluster). Outputs do not depend on it.",
)


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


PrecisionOpt = typer.Option(
    "auto", "--precision",
    help="Encoder weights while encoding: auto (bfloat16 where the hardware has it natively: CPUs with AVX512-BF16 or AMX, GPUs; "
    "else float32) | float32 | bfloat16 (~2x faster on such CPUs; embeddings within cosine 1e-4) | float16 (GPU).",
)

IndexOpt = typer.Option(
    "flat", "--index", help="faiss index: flat (exact) | ivf | hnsw (approximate, for large corpora; the stage reports recall against flat)."
)


@app.command()
def dense(
    run_dir: Path = RunOpt,
    model: str = ModelOpt,
    k: int = typer.Option(100, "--k", help="Candidates per query."),
    max_seq_length: int = typer.Option(256, "--max-seq-length", help="Tokens per text."),
    dtype: str = typer.Option("float16", "--dtype", help="Stored corpus embeddings: float16 | float32"),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoding batch size."),
    threads: Optional[int] = typer.Option(None, "--threads", help="faiss threads (default: all cores)."),
    engine: str = EngineOpt,
    ray_address: Optional[str] = RayAddressOpt,
    ray_actors: Optional[int] = RayActorsOpt,
    index: str = IndexOpt,
    nprobe: int = typer.Option(16, "--nprobe", help="ivf: cells searched per query (more: higher recall, slower)."),
    ef_search: int = typer.Option(128, "--ef-search", help="hnsw: search breadth (more: higher recall, slower)."),
    precision: str = PrecisionOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Dense candidates: encode (cached embeddings), faiss inner-product search, score every positive."""
    from negmine.stages import dense_stage

    _with_run(
        run_dir,
        lambda run: dense_stage(run, model, k, max_seq_length, dtype, batch_size, threads, force=force, engine=engine, ray_address=ray_address, index=index, nprobe=nprobe, ef_search=ef_search, precision=precision, ray_actors=ray_actors),
        as_json,
        "dense",
    )


FusionOpt = typer.Option("rrf", "--fusion", help="hybrid pool: rrf (by RRF score) | union (by best rank, then RRF score)")


@app.command()
def hybrid(
    run_dir: Path = RunOpt,
    fusion: str = FusionOpt,
    rrf_k: int = typer.Option(60, "--rrf-k", help="k of RRF, score = sum of 1/(k + rank)."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Fuse the bm25 and dense candidates (Reciprocal Rank Fusion); writes candidates_hybrid and positive_scores_hybrid."""
    from negmine.stages import hybrid_stage

    _with_run(run_dir, lambda run: hybrid_stage(run, fusion, rrf_k, force), as_json, "hybrid")


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
    source: str = typer.Option("dense", "--source", help="Candidate pool to score: dense | bm25 | hybrid"),
    max_length: int = typer.Option(512, "--max-length", help="Tokens per (query, document) pair."),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per forward pass."),
    engine: str = EngineOpt,
    ray_address: Optional[str] = RayAddressOpt,
    ray_actors: Optional[int] = RayActorsOpt,
    teacher_precision: str = typer.Option("float32", "--teacher-precision", help="A bi-encoder teacher's precision: float32 | bfloat16 | float16 | auto (local engine)."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Score every candidate and labelled positive with a teacher; writes scored_candidates_/scored_positives_<source>.parquet (ce_score, ce_prob)."""
    from rich.progress import Progress

    from negmine.stages import rescore_stage

    def body(run):
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("rescoring pairs", total=None)
            return rescore_stage(
                run, teacher, source, max_length, batch_size, progress=lambda n: bar.advance(task, n), force=force, engine=engine, ray_address=ray_address,
                ray_actors=ray_actors, precision=teacher_precision,
            )

    _with_run(run_dir, body, as_json, "rescore")


@app.command()
def cluster(
    run_dir: Path = RunOpt,
    model: str = ModelOpt,
    n_clusters: Optional[int] = typer.Option(None, "--n-clusters", help="k of k-means (default √#queries, at most 2000)."),
    seed: int = typer.Option(42, "--seed", help="k-means seed (same seed, same clusters)."),
    max_seq_length: int = typer.Option(256, "--max-seq-length", help="Tokens per query."),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoding batch size."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Cluster the queries (k-means on their embeddings); writes clusters.parquet for tas-balanced."""
    from negmine.stages import cluster_stage

    _with_run(run_dir, lambda run: cluster_stage(run, model, n_clusters, seed, max_seq_length, batch_size, force), as_json, "cluster")


@app.command()
def sample(
    run_dir: Path = RunOpt,
    strategy: str = typer.Option("simans", "--strategy", "-s", help="topk | range | simans | random | positive-aware | star | tas-balanced | curriculum | denoise"),
    source: str = SourceOpt,
    num_negatives: int = typer.Option(7, "--num-negatives", "-n", help="Negatives per (query, positive)."),
    seed: int = typer.Option(42, "--seed", help="Random seed (same seed, same bytes)."),
    a: Optional[float] = AOpt,
    b: Optional[float] = BOpt,
    kernel: Optional[str] = KernelOpt,
    positive_score: Optional[str] = PositiveScoreOpt,
    range_min: Optional[int] = RangeMinOpt,
    range_max: Optional[int] = RangeMaxOpt,
    score: Optional[str] = ScoreOpt,
    max_relative: Optional[float] = MaxRelativeOpt,
    margin: Optional[float] = MarginOpt,
    max_score: Optional[float] = MaxScoreOpt,
    hard_ratio: Optional[float] = HardRatioOpt,
    n_stages: Optional[int] = NStagesOpt,
    n_bins: Optional[int] = NBinsOpt,
    negative_below: Optional[float] = NegativeBelowOpt,
    positive_above: Optional[float] = PositiveAboveOpt,
    pseudo_positives: Optional[bool] = PseudoPositivesOpt,
    param: List[str] = ParamOpt,
    dedup: bool = DedupOpt,
    max_fn_prob: Optional[float] = MaxFnProbOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Sample negatives from a candidate pool with a strategy; writes negatives_<strategy>.parquet."""
    from negmine.stages import sample_stage

    def body(run):
        params = _strategy_params(
            _parse_params(param), a=a, b=b, kernel=kernel, positive_score=positive_score, range_min=range_min, range_max=range_max,
            score=score, max_relative=max_relative, margin=margin, max_score=max_score, hard_ratio=hard_ratio, n_stages=n_stages,
            n_bins=n_bins, negative_below=negative_below, positive_above=positive_above, pseudo_positives=pseudo_positives,
        )
        return sample_stage(run, strategy, source, num_negatives, seed, params, force, dedup=dedup, max_fn_prob=max_fn_prob)

    _with_run(run_dir, body, as_json, "sample")


@app.command()
def mine(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory (BEIR, MS MARCO or Parquet layout)."),
    run_dir: Path = RunOpt,
    strategy: str = typer.Option("simans", "--strategy", "-s", help="topk | range | simans | random | positive-aware | star | tas-balanced | curriculum | denoise"),
    source: str = SourceOpt,
    fusion: str = FusionOpt,
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
    a: Optional[float] = AOpt,
    b: Optional[float] = BOpt,
    kernel: Optional[str] = KernelOpt,
    positive_score: Optional[str] = PositiveScoreOpt,
    range_min: Optional[int] = RangeMinOpt,
    range_max: Optional[int] = RangeMaxOpt,
    score: Optional[str] = ScoreOpt,
    max_relative: Optional[float] = MaxRelativeOpt,
    margin: Optional[float] = MarginOpt,
    max_score: Optional[float] = MaxScoreOpt,
    hard_ratio: Optional[float] = HardRatioOpt,
    n_stages: Optional[int] = NStagesOpt,
    n_bins: Optional[int] = NBinsOpt,
    negative_below: Optional[float] = NegativeBelowOpt,
    positive_above: Optional[float] = PositiveAboveOpt,
    pseudo_positives: Optional[bool] = PseudoPositivesOpt,
    param: List[str] = ParamOpt,
    teacher: Optional[str] = TeacherOpt,
    teacher_max_length: int = typer.Option(512, "--teacher-max-length", help="Tokens per (query, document) pair (per text for a bi-encoder teacher)."),
    engine: str = EngineOpt,
    ray_address: Optional[str] = RayAddressOpt,
    ray_actors: Optional[int] = RayActorsOpt,
    index: str = IndexOpt,
    precision: str = PrecisionOpt,
    dedup: bool = DedupOpt,
    max_fn_prob: Optional[float] = MaxFnProbOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Run every stage a strategy needs (ingest, retrieval, sample), skipping those already up to date."""
    from negmine.pipeline import mine as mine_pipeline

    def body(run):
        params = _strategy_params(
            _parse_params(param), a=a, b=b, kernel=kernel, positive_score=positive_score, range_min=range_min, range_max=range_max,
            score=score, max_relative=max_relative, margin=margin, max_score=max_score, hard_ratio=hard_ratio, n_stages=n_stages,
            n_bins=n_bins, negative_below=negative_below, positive_above=positive_above, pseudo_positives=pseudo_positives,
        )
        with err.status("mining") as status:
            return mine_pipeline(
                run, data, strategy, source, fmt, split, model, k, num_negatives, seed, threads,
                max_seq_length, dtype, batch_size, bm25_backend, params, force,
                on_stage=lambda name: status.update(f"[bold]{name}[/] …"), teacher=teacher, fusion=fusion, teacher_max_length=teacher_max_length,
                engine=engine, ray_address=ray_address, index=index, precision=precision, ray_actors=ray_actors,
                dedup=dedup, max_fn_prob=max_fn_prob,
            )

    _with_run(run_dir, body, as_json, f"mine --strategy {strategy}")


@app.command()
def duplicates(
    run_dir: Path = RunOpt,
    threshold: float = typer.Option(0.8, "--dup-threshold", help="Word-shingle Jaccard at or above which a text nearly duplicates a positive's."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Find documents whose text duplicates a labelled positive's; writes duplicates.parquet."""
    from negmine.false_negative_stages import duplicates_stage

    _with_run(run_dir, lambda run: duplicates_stage(run, threshold, force), as_json, "duplicates")


@app.command("fn-scores")
def fn_scores(
    run_dir: Path = RunOpt,
    source: str = typer.Option("dense", "--source", help="Candidate pool to score: dense | bm25 | hybrid"),
    method: str = typer.Option("pu", "--fn-model", help="pu (learns from the labelled positives, no labels needed) | labels (needs --fn-labels)"),
    labels: Optional[Path] = typer.Option(None, "--fn-labels", help="CSV query_id,neg_id,label (0/1) of audited candidates; fits on them."),
    seed: int = typer.Option(42, "--seed", help="Seed of the model's folds and bootstrap."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """P(false negative) of every candidate from the run's signals; writes fn_scores_<source>.parquet."""
    from negmine.false_negative_stages import fn_scores_stage

    _with_run(run_dir, lambda run: fn_scores_stage(run, source, method, labels, seed, force), as_json, "fn-scores")


@app.command("estimate-fn")
def estimate_fn(
    run_dir: Path = RunOpt,
    source: str = typer.Option("dense", "--source", help="Candidate source whose teacher scores (scored_*_<source>) to use."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Teacher: count a negative when its ce_prob > THRESHOLD (default: when its ce_score > its positive's)."
    ),
    qrels_full: Optional[Path] = typer.Option(None, "--qrels-full", help="Qrels with more judgements than mined with (BEIR tsv or Parquet)."),
    audit: int = typer.Option(0, "--audit", help="Write a seeded audit sample of N negatives per strategy (fn_audit.csv/.parquet)."),
    audit_labels: Optional[Path] = typer.Option(None, "--audit-labels", help="CSV query_id,neg_id,label (0/1) of a labelled audit."),
    seed: int = typer.Option(42, "--seed", help="Seed of the bootstrap and the audit sample."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples (of queries)."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Estimate the false-negative rate of every negatives_*.parquet (teacher, extra qrels, hand audit); writes fn_report.parquet/json."""
    from negmine.stages import estimate_fn_stage

    _guarded(lambda: check_name(source, "--source"))
    results = _with_run(
        run_dir, lambda run: estimate_fn_stage(run, source, threshold, qrels_full, audit, audit_labels, seed, n_boot, force), as_json, "estimate-fn"
    )
    if not as_json and results:
        _print_fn_table(results[0].entry.get("stats", {}).get("strategies", {}))


def _print_fn_table(summary: dict) -> None:
    from rich.table import Table

    def cell(estimate):
        if not estimate or estimate.get("rate") is None:
            return "–"
        return f"{estimate['rate']:.1%} [{estimate['ci_low']:.1%}, {estimate['ci_high']:.1%}]"

    table = Table(title="estimated false-negative rate [95% interval]", title_justify="left")
    for column in ("strategy", "negatives", "model", "teacher", "labels", "audit", "neg/pos score"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for strategy, entry in sorted(summary.items()):
        ratio = entry.get("score_ratio")
        table.add_row(strategy, str(entry["negatives"]), cell(entry.get("model")), cell(entry.get("teacher")), cell(entry.get("labels")), cell(entry.get("audit")),
                      "–" if ratio is None else f"{ratio:.3f}")
    err.print(table)


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

    _guarded(go)


@app.command()
def train(
    run_dir: Path = typer.Option(..., "--run", "-r", help="Run directory holding the mined negatives."),
    model: str = ModelOpt,
    name: str = typer.Option(..., "--name", help="Model name; saved to RUN/models/NAME/final."),
    method: str = typer.Option("mnrl", "--method", help="mnrl | star | adore"),
    strategy: str = typer.Option("simans", "--strategy", "-s", help="Which negatives_<strategy> table; 'none' for in-batch only."),
    loss: str = typer.Option("mnrl", "--loss", help="mnrl | cached-mnrl (GradCache, large batches in small memory)"),
    num_negatives: int = typer.Option(1, "--num-negatives", "-n", help="Mined negatives per example."),
    random_negatives: int = typer.Option(1, "--random-negatives", help="star: random corpus negatives per example."),
    batching: str = typer.Option("no-duplicates", "--batching", help="no-duplicates | tas-balanced (needs clusters)"),
    epochs: int = typer.Option(1, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    learning_rate: float = typer.Option(2e-5, "--lr", help="Learning rate."),
    seed: int = typer.Option(42, "--seed"),
    max_seq_length: int = typer.Option(256, "--max-seq-length"),
    adore_k: int = typer.Option(200, "--adore-k", help="adore: documents retrieved per query each step."),
    mask_collisions: bool = typer.Option(True, "--mask-collisions/--no-mask-collisions", help="Leave out of each anchor's softmax the in-batch documents that are positives of its query (labelled, duplicates.parquet, likely false negatives)."),
    fn_source: str = typer.Option("dense", "--fn-source", help="Which fn_scores_<source> table gives the likely false negatives to mask (used when the run has it)."),
    mask_fn_above: float = typer.Option(0.5, "--mask-fn-above", help="Mask candidates whose fn_prob is above this."),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Fine-tune a bi-encoder on the mined negatives (sentence-transformers Trainer; ADORE for --method adore)."""
    from negmine.training_stages import train_stage

    _guarded(lambda: [check_name(value, option) for value, option in ((name, "--name"), (strategy, "--strategy"), (fn_source, "--fn-source"))])
    chosen = None if strategy == "none" else strategy
    masking = {"mask_collisions": mask_collisions, "fn_source": fn_source, "mask_fn_above": mask_fn_above}
    _with_run(
        run_dir,
        lambda run: train_stage(run, model, name, method, chosen, loss, num_negatives, random_negatives, batching, epochs, batch_size, learning_rate, seed, max_seq_length, adore_k, force, **masking),
        as_json,
        "train",
    )


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
            from negmine.training_stages import compare_results

            rows = compare_results(compare[0], compare[1], metric)
            sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            return
        if not model or not data:
            raise BadInputError("--model", "evaluate needs --model and --data (or --compare A B)")
        from negmine.training_stages import evaluate_model

        result = evaluate_model(model, data, split, metric or ("nDCG@10", "RR@10", "R@100"), max_seq_length=max_seq_length, doc_model=doc_model, out=out)
        sys.stdout.write(json.dumps(result, indent=2) + "\n")

    _guarded(go)


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
    from negmine.summary import render, summary_dict

    def go():
        parsed = parse_recipe(recipe, parse_overrides(overrides))
        import contextlib

        # stdout is for the --json summary: the trainer's log lines go to stderr
        with err.status("running") as status, contextlib.redirect_stdout(sys.stderr):
            results = run_recipe(parsed, data, out, force, on_stage=lambda name: status.update(f"[bold]{name}[/] …"))
        if as_json:
            sys.stdout.write(json.dumps(summary_dict(results), indent=2, sort_keys=True) + "\n")
        else:
            render(err, results, title=f"run {recipe} — {out}")

    _guarded(go)


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

    _guarded(go)


@app.command()
def export(
    run_dir: Path = typer.Option(..., "--run", "-r", help="Run directory holding negatives_<strategy>.parquet."),
    strategy: str = typer.Option(..., "--strategy", "-s", help="Which negatives_<strategy> table to export."),
    fmt: str = typer.Option("sentence-transformers", "--format", "-f", help="sentence-transformers | flagembedding | tevatron"),
    out: str = typer.Option(..., "--out", "-o", help="Output file (*.parquet or *.jsonl for sentence-transformers, *.jsonl otherwise); '-' streams JSONL to stdout."),
    layout: str = typer.Option("n-tuple", "--layout", help="sentence-transformers: n-tuple | triplet | labeled-pair (mine_hard_negatives' output_format)."),
    num_negatives: Optional[int] = typer.Option(None, "--num-negatives", "-n", help="sentence-transformers n-tuple: negative columns (default: the widest pair; shorter pairs dropped)."),
    group_ids: Optional[bool] = typer.Option(None, "--group-ids/--no-group-ids", help="Add query_id, the documents' ids and positive_ids (for masking in-batch false negatives). Default: on for flagembedding and tevatron, off for sentence-transformers (its trainer would read them as texts)."),
    as_json: bool = JsonOpt,
):
    """Write the negatives as training data for sentence-transformers, FlagEmbedding or Tevatron (text joined from corpus/queries)."""
    from negmine.export import export_run

    def go():
        check_name(strategy, "--strategy")
        stats = export_run(run_dir, strategy, fmt, out, layout, num_negatives, group_ids)
        if as_json and out != "-":
            sys.stdout.write(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        elif not as_json:
            dropped = stats.get("pairs_dropped_short")
            note = f" ({dropped} pairs short of {num_negatives or 'the widest'} negatives dropped)" if dropped else ""
            err.print(f"export {fmt}: {stats['rows']:,} rows → {out}{note}", highlight=False)

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
