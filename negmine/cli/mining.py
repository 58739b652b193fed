"""Commands that mine: ingest, the retrievers, rescore, cluster, the false-negative stages, sample, and ``mine`` itself."""

from pathlib import Path
from typing import List, Optional

import typer

from negmine.cli.app import app, err, given, guarded, print_summary, with_run
from negmine.cli.options import (
    ENCODER, ENGINE, EMBEDDINGS, FALSE_NEGATIVES, PROMPTS, SOURCE_HELP, STRATEGY_HELP, STRATEGY_PARAMS, TEACHER_HELP, TEACHER_NAME_HELP, DataOpt, ForceOpt, JsonOpt, RunOpt, opt,
    options, strategy_params,
)

SourceOpt = opt("--source", help=SOURCE_HELP, default="dense")
FormatOpt = opt("--format", help="auto | beir | msmarco | parquet | pairs", default="auto")
SplitOpt = opt("--split", help="qrels split whose positives are mined.", default="train")
KOpt = opt("--k", help="Candidates per query.", default="100")
FusionOpt = opt("--fusion", help="hybrid pool: rrf (by RRF score) | union (by best rank, then RRF score)", default="rrf")
StrategyOpt = opt("--strategy", "-s", help=STRATEGY_HELP, default="simans")
NumNegativesOpt = opt("--num-negatives", "-n", help="Negatives per (query, positive).", default="7")
SeedOpt = opt("--seed", help="Random seed (same seed, same bytes).", default="42")
SampleTeacherNameOpt = opt("--teacher-name", help=TEACHER_NAME_HELP.format(what="denoise, simans --score ce and the negatives' ce_score"))
# a pair dataset (negmine.ingest.pairs): one row per (query, positive), often with no corpus and no qrels
PAIRS = {
    "query_column": (Optional[str], opt("--query-column", help="pairs: the query column (default: anchor, query, question … whichever the data has).")),
    "positive_column": (Optional[str], opt("--positive-column", help="pairs: the positive column (default: positive, answer, context … whichever the data has).")),
    "corpus": (Optional[Path], opt("--corpus", help="pairs: more documents (a file or save_to_disk directory with a text column; id and title optional).")),
}


@app.command()
@options(PAIRS)
def ingest(data: Path = DataOpt, run_dir: Path = RunOpt, format: Optional[str] = FormatOpt, split: Optional[str] = SplitOpt,
           force: bool = ForceOpt, as_json: bool = JsonOpt, **shared):
    """Read and validate a dataset (BEIR, MS MARCO, Parquet or a pair dataset) into corpus, queries and qrels tables."""
    from negmine.runners import ingest_stage

    with_run(run_dir, lambda run: ingest_stage(run, data, force=force, **given(format=format, split=split, **shared)), as_json, "ingest")


@app.command()
def bm25(
    run_dir: Path = RunOpt,
    k: Optional[int] = KOpt,
    k1: Optional[float] = opt("--k1", help="BM25 k1.", default="0.9"),
    b: Optional[float] = opt("--b", help="BM25 b.", default="0.4"),
    threads: Optional[int] = opt("--threads", help="Search threads (do not change the output).", default="1"),
    backend: Optional[str] = opt("--backend", help="pyserini (Lucene) | bm25s", default="pyserini"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """BM25 candidates (pyserini/Lucene by default) and the BM25 score of every positive."""
    from negmine.runners import bm25_stage

    with_run(run_dir, lambda run: bm25_stage(run, force=force, **given(k=k, k1=k1, b=b, threads=threads, backend=backend)), as_json, "bm25")


@app.command()
@options(ENCODER, EMBEDDINGS, PROMPTS, ENGINE)
def dense(
    run_dir: Path = RunOpt,
    k: Optional[int] = KOpt,
    threads: Optional[int] = opt("--threads", help="faiss threads (default: all cores; do not change the output)."),
    nprobe: Optional[int] = opt("--nprobe", help="ivf: cells searched per query (more: higher recall, slower).", default="16"),
    ef_search: Optional[int] = opt("--ef-search", help="hnsw: search breadth (more: higher recall, slower).", default="128"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    **shared,
):
    """Dense candidates: encode (cached embeddings), faiss inner-product search, score every positive."""
    from negmine.runners import dense_stage

    chosen = given(k=k, threads=threads, nprobe=nprobe, ef_search=ef_search, **shared)
    with_run(run_dir, lambda run: dense_stage(run, force=force, **chosen), as_json, "dense")


@app.command()
def hybrid(run_dir: Path = RunOpt, fusion: Optional[str] = FusionOpt, k: Optional[int] = opt("--rrf-k", help="k of RRF, score = sum of 1/(k + rank).", default="60"),
           force: bool = ForceOpt, as_json: bool = JsonOpt):
    """Fuse the bm25 and dense candidates (Reciprocal Rank Fusion); writes candidates_hybrid and positive_scores_hybrid."""
    from negmine.runners import hybrid_stage

    with_run(run_dir, lambda run: hybrid_stage(run, force=force, **given(fusion=fusion, k=k)), as_json, "hybrid")


@app.command()
@options(ENGINE)
def rescore(
    run_dir: Path = RunOpt,
    teacher: List[str] = typer.Option(..., "--teacher", help=TEACHER_HELP),
    source: Optional[str] = opt("--source", help="Candidate pool to score: dense | bm25 | hybrid", default="dense"),
    max_length: Optional[int] = opt("--max-length", help="Tokens per (query, document) pair.", default="512"),
    batch_size: Optional[int] = opt("--batch-size", help="Pairs per forward pass.", default="32"),
    teacher_precision: Optional[str] = opt("--teacher-precision", help="A bi-encoder teacher's precision: float32 | bfloat16 | float16 | auto (local engine).", default="float32"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    **shared,
):
    """Score every candidate and labelled positive with one or more teachers; writes scored_candidates_/scored_positives_<source>.parquet (ce_score, ce_prob)."""
    from negmine.runners import rescore_stage

    chosen = given(source=source, max_length=max_length, batch_size=batch_size, teacher_precision=teacher_precision, **shared)
    with_run(run_dir, lambda run: rescore_stage(run, teacher, force=force, **chosen), as_json, "rescore")


@app.command()
@options(ENCODER, {name: PROMPTS[name] for name in ("query_prompt", "query_prompt_name")})
def cluster(
    run_dir: Path = RunOpt,
    n_clusters: Optional[int] = opt("--n-clusters", help="k of k-means (default √#queries, at most 2000)."),
    seed: Optional[int] = opt("--seed", help="k-means seed (same seed, same clusters).", default="42"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    **shared,
):
    """Cluster the queries (k-means on their embeddings); writes clusters.parquet for tas-balanced."""
    from negmine.runners import cluster_stage

    chosen = given(n_clusters=n_clusters, seed=seed, **shared)
    with_run(run_dir, lambda run: cluster_stage(run, force=force, **chosen), as_json, "cluster")


@app.command()
@options(STRATEGY_PARAMS, FALSE_NEGATIVES)
def sample(
    run_dir: Path = RunOpt,
    strategy: Optional[str] = StrategyOpt,
    source: Optional[str] = SourceOpt,
    num_negatives: Optional[int] = NumNegativesOpt,
    seed: Optional[int] = SeedOpt,
    teacher_name: Optional[str] = SampleTeacherNameOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    **shared,
):
    """Sample negatives from a candidate pool with a strategy; writes negatives_<strategy>.parquet."""
    from negmine.runners import sample_stage

    def body(run):
        params = strategy_params(shared)
        return sample_stage(run, force=force, **given(strategy=strategy, source=source, num_negatives=num_negatives, seed=seed, teacher_name=teacher_name,
                                                      params=params or None, **shared))

    with_run(run_dir, body, as_json, "sample")


@app.command()
@options(ENCODER, EMBEDDINGS, PROMPTS, ENGINE, STRATEGY_PARAMS, FALSE_NEGATIVES, PAIRS)
def mine(
    data: Path = DataOpt,
    run_dir: Path = RunOpt,
    strategy: Optional[str] = StrategyOpt,
    source: Optional[str] = SourceOpt,
    fusion: Optional[str] = FusionOpt,
    format: Optional[str] = FormatOpt,
    split: Optional[str] = SplitOpt,
    k: Optional[int] = KOpt,
    num_negatives: Optional[int] = NumNegativesOpt,
    seed: Optional[int] = SeedOpt,
    threads: Optional[int] = opt("--threads", help="Threads for search (do not change the output).", default="1"),
    bm25_backend: Optional[str] = opt("--bm25-backend", help="pyserini | bm25s", default="pyserini"),
    teacher: Optional[List[str]] = opt("--teacher", help=TEACHER_HELP),
    teacher_name: Optional[str] = SampleTeacherNameOpt,
    teacher_max_length: Optional[int] = opt("--teacher-max-length", help="Tokens per (query, document) pair (per text for a bi-encoder teacher).", default="512"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    **shared,
):
    """Run every stage a strategy needs (ingest, retrieval, sample), skipping those already up to date.

    `negmine mine` is a built-in pipeline (negmine.recipes.mine_recipe): `negmine run` runs the same stages from a recipe file.
    """
    from negmine.recipes import mine_recipe, run_recipe

    def go():
        params = strategy_params(shared)
        recipe = mine_recipe(**given(
            strategy=strategy, source=source, fusion=fusion, format=format, split=split, k=k, num_negatives=num_negatives, seed=seed, threads=threads,
            bm25_backend=bm25_backend, teacher=teacher, teacher_name=teacher_name, teacher_max_length=teacher_max_length, params=params or None, **shared,
        ))
        results = run_recipe(recipe, data, run_dir, force)
        print_summary(results, as_json, f"mine --strategy {strategy or 'simans'} — {run_dir}")

    guarded(go)


@app.command()
def duplicates(
    run_dir: Path = RunOpt,
    threshold: Optional[float] = opt("--dup-threshold", help="Word-shingle Jaccard at or above which a text nearly duplicates a positive's.", default="0.8"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Find documents whose text duplicates a labelled positive's; writes duplicates.parquet."""
    from negmine.runners import duplicates_stage

    with_run(run_dir, lambda run: duplicates_stage(run, force=force, **given(threshold=threshold)), as_json, "duplicates")


@app.command("fn-scores")
def fn_scores(
    run_dir: Path = RunOpt,
    source: Optional[str] = opt("--source", help="Candidate pool to score: dense | bm25 | hybrid", default="dense"),
    method: Optional[str] = opt("--fn-model", help="pu (learns from the labelled positives, no labels needed) | labels (needs --fn-labels)", default="pu"),
    labels: Optional[Path] = opt("--fn-labels", help="CSV query_id,neg_id,label (0/1) of audited candidates; fits on them."),
    seed: Optional[int] = opt("--seed", help="Seed of the model's folds and bootstrap.", default="42"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """P(false negative) of every candidate from the run's signals; writes fn_scores_<source>.parquet."""
    from negmine.runners import fn_scores_stage

    with_run(run_dir, lambda run: fn_scores_stage(run, force=force, **given(source=source, method=method, labels=labels, seed=seed)), as_json, "fn-scores")


@app.command("estimate-fn")
def estimate_fn(
    run_dir: Path = RunOpt,
    source: Optional[str] = opt("--source", help="Candidate source whose teacher scores (scored_*_<source>) to use.", default="dense"),
    threshold: Optional[float] = opt("--threshold", help="Teacher: count a negative when its ce_prob > THRESHOLD (default: when its ce_score > its positive's)."),
    teacher_name: Optional[str] = opt("--teacher-name", help=TEACHER_NAME_HELP.format(what="the teacher estimate")),
    qrels_full: Optional[Path] = opt("--qrels-full", help="Qrels with more judgements than mined with (BEIR tsv or Parquet)."),
    audit: Optional[int] = opt("--audit", help="Write a seeded audit sample of N negatives per strategy (fn_audit.csv/.parquet).", default="0"),
    audit_labels: Optional[Path] = opt("--audit-labels", help="CSV query_id,neg_id,label (0/1) of a labelled audit."),
    seed: Optional[int] = opt("--seed", help="Seed of the bootstrap and the audit sample.", default="42"),
    n_boot: Optional[int] = opt("--n-boot", help="Bootstrap resamples (of queries).", default="1000"),
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
):
    """Estimate the false-negative rate of every negatives_*.parquet (teacher, extra qrels, hand audit); writes fn_report.parquet/json."""
    from negmine.runners import estimate_fn_stage

    chosen = given(source=source, threshold=threshold, teacher_name=teacher_name, qrels_full=qrels_full, audit=audit, audit_labels=audit_labels, seed=seed, n_boot=n_boot)
    results = with_run(run_dir, lambda run: estimate_fn_stage(run, force=force, **chosen), as_json, "estimate-fn")
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
