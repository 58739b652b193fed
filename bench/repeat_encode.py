"""Does the encoder give the same bytes every time? The same corpus encoded in fresh processes, each
run's embeddings hashed and compared, each compared by cosine with the first.

    python bench/repeat_encode.py --runs 12                       # all-MiniLM-L6-v2, SciFact, float32, openvino
    python bench/repeat_encode.py --model mpnet --max-docs 1065 --runs 3 --precision bfloat16

Every run is its own process (compiling the graph and starting its streams anew), encoding the first
``--max-docs`` documents of ``--data`` as a mine does (title and text, max_seq_length 256, batch 64).
Prints one line per run (seconds, sha256 of the float32 embeddings, documents whose cosine to run 1's
is below 0.999) and a summary; nothing is written outside ``--work``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from host import MODELS, bench_model, describe

ONE_RUN = """
import sys, numpy as np
from negmine.ingest import ingest
from negmine.retrieve.candidates import doc_texts
from negmine.retrieve.encode import encode
from negmine.retrieve.models import load_model
data, model, precision, backend, limit, out = sys.argv[1:]
texts = doc_texts(ingest(data).corpus)[: int(limit)]
np.save(out, encode(load_model(model, 256, precision=precision, backend=backend), texts, 64))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--model", choices=MODELS, default="minilm")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--max-docs", type=int, default=1065)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--work", default=None, help="where the embeddings go (default: a temporary folder)")
    args = parser.parse_args()
    import numpy as np

    model, name = bench_model(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="negmine-repeat-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{name}, {args.precision}, backend {args.backend}, first {args.max_docs} documents of {args.data}; {describe()}", flush=True)
    first, hashes, wrong = None, [], []
    for run in range(1, args.runs + 1):
        out = work / f"run{run}.npy"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", ONE_RUN, args.data, model, args.precision, args.backend, str(args.max_docs), str(out)], check=True)
        emb = np.load(out).astype(np.float32)
        hashes.append(hashlib.sha256(emb.tobytes()).hexdigest()[:16])
        first = emb if first is None else first
        cos = (emb * first).sum(1) / np.maximum(np.linalg.norm(emb, axis=1) * np.linalg.norm(first, axis=1), 1e-12)
        wrong.append(int((cos < 0.999).sum()))
        print(f"run {run}: {time.perf_counter() - t0:.1f} s, sha256 {hashes[-1]}, documents below cosine 0.999 to run 1: {wrong[-1]}", flush=True)
    print(json.dumps({"runs": args.runs, "distinct_outputs": len(set(hashes)), "runs_differing_from_run_1": sum(w > 0 for w in wrong)}))


if __name__ == "__main__":
    main()
