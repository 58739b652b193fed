"""Where the encoding time goes: each encoder backend against sentence-transformers on the same texts.

    python bench/encoders.py [--data ../shared/data/scifact] [--docs 400] [--max-seq-length 256] [--isa NAME]
                             [--model mpnet]

Encodes the first ``--docs`` corpus texts (title + " " + text, as the dense stage does) with
sentence-transformers (``SentenceTransformer.encode``, batch 64, its model cast with ``model.to`` for
bfloat16) and with negmine's encoder on each backend (``negmine.retrieve.encode.encode``: length-sorted
batches, the CPU token budget), in float32 and, where the CPU computes it natively, bfloat16. Each is
timed after a warm-up batch, in this process, one after the other; a row gives documents per second,
the speed-up over sentence-transformers at the same precision, and the smallest cosine between its
embeddings and sentence-transformers' float32 ones.

``--isa avx2`` reruns the whole script in a child process with the instruction sets capped where each
library has a switch (torch: ``ATEN_CPU_CAPABILITY=avx2``; MKL: ``MKL_ENABLE_INSTRUCTIONS=AVX2``;
oneDNN, which OpenVINO's CPU plugin is built on: ``ONEDNN_MAX_CPU_ISA=AVX2``), an approximation of an
AVX2-only CPU on an AVX-512 one. OpenVINO runs some matrix products through MLAS, which reads the CPU's
features itself and has no such switch: those still use AVX-512, so the OpenVINO row under ``--isa
avx2`` is faster than a real AVX2 CPU would be. ``--model mpnet`` encodes with all-mpnet-base-v2
(bench/mpnet.py) instead of all-MiniLM-L6-v2: an architecture negmine's own BERT does not run, which
OpenVINO runs exported from transformers' AutoModel and torch through AutoModel. Writes
bench/results/encoders[_mpnet][_ISA].md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from host import ISA_ENV, MODELS, bench_model, describe, isa_note  # bench/host.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")

def texts_of(data: Path, n: int) -> list[str]:
    texts = []
    with open(data / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            texts.append(f"{doc.get('title') or ''} {doc['text']}".strip())
            if len(texts) == n:
                break
    return texts


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default=None)
    parser.add_argument("--model", choices=MODELS, default="minilm")
    args = parser.parse_args()
    if args.isa and not os.environ.get("NEGMINE_BENCH_ISA"):
        argv = [sys.executable, __file__, *[a for a in sys.argv[1:]]]
        sys.exit(subprocess.call(argv, env={**os.environ, **ISA_ENV[args.isa], "NEGMINE_BENCH_ISA": args.isa}))

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from negmine.retrieve.backends import openvino_installed
    from negmine.retrieve.device import native_bfloat16
    from negmine.retrieve.encode import encode
    from negmine.retrieve.models import load_model

    model_path, model_name = bench_model(args.model)
    texts = texts_of(Path(args.data), args.docs)
    precisions = ["float32"] + (["bfloat16"] if native_bfloat16() and not args.isa else [])
    backends = ["torch"] + (["openvino"] if openvino_installed() else [])
    rows, reference, st_rate = [], None, {}
    for precision in precisions:
        st = SentenceTransformer(model_path, device="cpu")
        st.max_seq_length = args.max_seq_length
        if precision != "float32":
            st.to(getattr(torch, precision))
        st.encode(texts[:8], batch_size=64)
        seconds, emb = timed(lambda: st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True))
        emb = np.asarray(emb, dtype=np.float32)
        reference = emb if reference is None else reference
        st_rate[precision] = len(texts) / seconds
        rows.append(("sentence-transformers", precision, st_rate[precision], 1.0, float((emb * reference).sum(1).min())))
        del st
        for backend in backends:
            model = load_model(model_path, args.max_seq_length, precision=precision, backend=backend)
            encode(model, texts[:8], 64)
            seconds, emb = timed(lambda: encode(model, texts, 64))
            rate = len(texts) / seconds
            rows.append((f"negmine, {backend}", precision, rate, rate / st_rate[precision], float((emb * reference).sum(1).min())))
            del model
            print(f"{backend} {precision}: {rate:.1f} docs/s", flush=True)
    isa = isa_note(args.isa)
    command = ("python bench/encoders.py" + (f" --docs {args.docs}" if args.docs != 400 else "") + (f" --isa {args.isa}" if args.isa else "")
               + (f" --model {args.model}" if args.model != "minilm" else ""))
    text = (
        f"{args.docs} SciFact documents, {model_name}, max_seq_length {args.max_seq_length}, batch 64, {torch.get_num_threads()} threads{isa}. "
        f"CPU: {describe()}. Command: `{command}`.\n\n"
        "| encoder | precision | docs/s | vs sentence-transformers, same precision | min cosine to ST float32 |\n|---|---|---|---|---|\n"
        + "\n".join(f"| {name} | {precision} | {rate:.1f} | {ratio:.2f}× | {cos:.5f} |" for name, precision, rate, ratio, cos in rows) + "\n"
    )
    print(text)
    out = Path("bench/results") / ("encoders" + (f"_{args.model}" if args.model != "minilm" else "") + (f"_{args.isa}" if args.isa else "") + ".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
