"""Does the encoder give the same bytes every time? The same corpus encoded in fresh processes, each
run's embeddings hashed and compared, each compared by cosine with the first.

    python bench/repeat_encode.py --runs 12                       # all-MiniLM-L6-v2, SciFact, float32, openvino
    python bench/repeat_encode.py --model mpnet --max-docs 1065 --runs 3 --precision bfloat16
    python bench/repeat_encode.py --model mpnet --longest --max-docs 160 --runs 10

Every run is its own process (compiling the graph and starting its streams anew), encoding the first
``--max-docs`` documents of ``--data`` (with ``--longest``, the longest by characters: 256-token batches)
as a mine does (title and text, max_seq_length 256, batch 64). The same documents are encoded once more
with ``--backend torch`` in the same precision, the reference. Prints one line per run (seconds, sha256
of the float32 embeddings, documents whose cosine to run 1's and to torch's is below 0.999) and a
summary; nothing is written outside ``--work``.
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
data, model, precision, backend, limit, longest, out = sys.argv[1:]
texts = doc_texts(ingest(data).corpus)
order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i)) if longest == "1" else range(len(texts))
texts = [texts[i] for i in order][: int(limit)]
np.save(out, encode(load_model(model, 256, precision=precision, backend=backend), texts, 64))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--model", choices=MODELS, default="minilm")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--max-docs", type=int, default=1065)
    parser.add_argument("--longest", action="store_true", help="the longest --max-docs documents instead of the first")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--work", default=None, help="where the embeddings go (default: a temporary folder)")
    args = parser.parse_args()
    import numpy as np

    model, name = bench_model(args.model)
    work = Path(args.work or tempfile.mkdtemp(prefix="negmine-repeat-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{name}, {args.precision}, backend {args.backend}, {'longest' if args.longest else 'first'} {args.max_docs} documents of {args.data}; {describe()}", flush=True)

    def encoded(backend: str, out: Path) -> np.ndarray:
        subprocess.run([sys.executable, "-c", ONE_RUN, args.data, model, args.precision, backend, str(args.max_docs),
                        "1" if args.longest else "0", str(out)], check=True)
        return np.load(out).astype(np.float32)

    def below(emb: np.ndarray, other: np.ndarray) -> int:
        cos = (emb * other).sum(1) / np.maximum(np.linalg.norm(emb, axis=1) * np.linalg.norm(other, axis=1), 1e-12)
        return int((cos < 0.999).sum())

    reference = encoded("torch", work / "torch.npy")
    first, hashes, wrong, off = None, [], [], []
    for run in range(1, args.runs + 1):
        t0 = time.perf_counter()
        emb = encoded(args.backend, work / f"run{run}.npy")
        hashes.append(hashlib.sha256(emb.tobytes()).hexdigest()[:16])
        first = emb if first is None else first
        wrong.append(below(emb, first))
        off.append(below(emb, reference))
        print(f"run {run}: {time.perf_counter() - t0:.1f} s, sha256 {hashes[-1]}, documents below cosine 0.999 to run 1: {wrong[-1]}, "
              f"to torch: {off[-1]}", flush=True)
    print(json.dumps({"runs": args.runs, "distinct_outputs": len(set(hashes)), "runs_differing_from_run_1": sum(w > 0 for w in wrong),
                      "runs_differing_from_torch": sum(w > 0 for w in off)}))


if __name__ == "__main__":
    main()
