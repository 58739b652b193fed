"""Build sample_data/ — a small slice of BEIR SciFact that negmine ships for its demo and tests.

    python bench/make_sample_data.py ../shared/data/scifact sample_data

Takes the first 60 train and 30 test queries (file order), their positives, each query's
BM25 top-3 (bm25s) so that hard negatives exist, and random documents up to 300 in all.
"""

import json
import random
import sys
from pathlib import Path

import bm25s


def main(src: str, dst: str, n_train: int = 60, n_test: int = 30, n_docs: int = 300) -> None:
    src, dst = Path(src), Path(dst)
    corpus = [json.loads(line) for line in open(src / "corpus.jsonl", encoding="utf-8")]
    queries = {q["_id"]: q for q in map(json.loads, open(src / "queries.jsonl", encoding="utf-8"))}
    qrels = {}
    for split in ("train", "test"):
        rows = [line.rstrip("\n").split("\t") for line in open(src / "qrels" / f"{split}.tsv")][1:]
        qrels[split] = rows
    chosen = {}
    for split, n in (("train", n_train), ("test", n_test)):
        order = list(dict.fromkeys(r[0] for r in qrels[split]))[:n]
        chosen[split] = order
    qids = chosen["train"] + chosen["test"]
    keep = {r[1] for split in qrels for r in qrels[split] if r[0] in qids}
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([d["title"] + " " + d["text"] for d in corpus], stopwords="en"))
    hits, _ = retriever.retrieve(bm25s.tokenize([queries[q]["text"] for q in qids], stopwords="en"), k=3)
    keep |= {corpus[i]["_id"] for row in hits for i in row}
    rng = random.Random(0)
    rest = [d["_id"] for d in corpus if d["_id"] not in keep]
    keep |= set(rng.sample(rest, max(0, n_docs - len(keep))))
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    with open(dst / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc in corpus:
            if doc["_id"] in keep:
                fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with open(dst / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid in qids:
            fh.write(json.dumps(queries[qid], ensure_ascii=False) + "\n")
    for split in ("train", "test"):
        with open(dst / "qrels" / f"{split}.tsv", "w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for row in qrels[split]:
                if row[0] in chosen[split]:
                    fh.write("\t".join(row) + "\n")
    print(f"{len(keep)} documents, {len(chosen['train'])} train and {len(chosen['test'])} test queries -> {dst}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
