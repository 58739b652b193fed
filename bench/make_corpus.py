"""Synthetic BEIR dataset of any size for scale benchmarks (issue 5).

    python bench/make_corpus.py --docs 1000000 --queries 10000 --out /tmp/synth-1m [--seed 0] [--median-words 60]

Documents draw their length (in words) from a log-normal fitted to a real corpus's lengths (the
median and spread of SciFact's title + abstract by default, or ``--lengths-from`` any BEIR corpus)
and their words from that corpus's unigram distribution, so tokenisers, BM25 and encoders see real
vocabulary with a Zipf tail. Each query is 4–12 consecutive words of one document (20% of its
words dropped), and that document is its positive in qrels/train.tsv.
Written streaming (constant memory), deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]+")


def fit(corpus_jsonl: Path) -> tuple[list[str], np.ndarray, float, float]:
    """Vocabulary, unigram probabilities, and log-normal (mu, sigma) of document lengths in words."""
    counts: Counter = Counter()
    lengths = []
    with open(corpus_jsonl, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            words = WORD.findall(f"{doc.get('title', '')} {doc['text']}".lower())
            counts.update(words)
            lengths.append(max(len(words), 1))
    vocab = sorted(counts)
    freq = np.array([counts[w] for w in vocab], dtype=np.float64)
    logs = np.log(lengths)
    return vocab, freq / freq.sum(), float(logs.mean()), float(logs.std())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lengths-from", default="../shared/data/scifact/corpus.jsonl")
    parser.add_argument("--max-words", type=int, default=512)
    parser.add_argument("--median-words", type=float, default=None, help="move the fitted log-normal to this median (its spread kept)")
    args = parser.parse_args()
    if args.queries > args.docs:
        parser.error("--queries must not exceed --docs")
    started = time.perf_counter()
    vocab, probs, mu, sigma = fit(Path(args.lengths_from))
    if args.median_words:
        mu = float(np.log(args.median_words))
    vocab_arr = np.array(vocab, dtype=object)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    query_docs = set(rng.choice(args.docs, size=args.queries, replace=False).tolist())
    total_words = 0
    block = 10_000
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as corpus, open(out / "queries.jsonl", "w", encoding="utf-8") as queries, open(
        out / "qrels" / "train.tsv", "w", encoding="utf-8"
    ) as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for start in range(0, args.docs, block):
            n = min(block, args.docs - start)
            lengths = np.clip(np.round(rng.lognormal(mu, sigma, size=n)), 3, args.max_words).astype(int)
            words = vocab_arr[rng.choice(len(vocab), size=int(lengths.sum()), p=probs)]
            offset = 0
            for i, length in enumerate(lengths):
                doc_words = words[offset : offset + length]
                offset += length
                doc_id = f"d{start + i}"
                title_len = min(int(length), 8)
                corpus.write(json.dumps({"_id": doc_id, "title": " ".join(doc_words[:title_len]), "text": " ".join(doc_words[title_len:]) or "."}) + "\n")
                if start + i in query_docs:
                    span = int(rng.integers(4, 13))
                    first = int(rng.integers(0, max(int(length) - span, 0) + 1))
                    picked = [w for w in doc_words[first : first + span] if rng.random() > 0.2] or list(doc_words[first : first + 1])
                    query_id = f"q{start + i}"
                    queries.write(json.dumps({"_id": query_id, "text": " ".join(picked)}) + "\n")
                    qrels.write(f"{query_id}\t{doc_id}\t1\n")
            total_words += int(lengths.sum())
            print(f"\r{start + n:,} / {args.docs:,} documents", end="", flush=True)
    print(
        f"\n{args.docs:,} documents ({total_words / args.docs:.1f} words on average, log-normal mu {mu:.2f} sigma {sigma:.2f}, "
        f"vocabulary {len(vocab):,}), {args.queries:,} queries → {out} in {time.perf_counter() - started:.1f} s; "
        f"{sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
