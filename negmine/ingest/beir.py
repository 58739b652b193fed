"""BEIR: corpus.jsonl, queries.jsonl, qrels/{split}.tsv (Thakur et al., NeurIPS 2021)."""

from __future__ import annotations

from pathlib import Path


from negmine.schemas import CORPUS
from negmine.ingest.records import Collector, Dataset, assemble, json_records, qrels_rows, tsv_rows


def read_beir(data_dir: str | Path, split: str = "train", corpus_file: Path | None = None) -> Dataset:
    data_dir = Path(data_dir)
    corpus_path, queries_path = data_dir / "corpus.jsonl", data_dir / "queries.jsonl"
    corpus = Collector(corpus_path, "_id", schema=CORPUS, sink=corpus_file)
    for number, rec in json_records(corpus_path, "_id", {"title": False, "text": True}):
        corpus.add(number, rec["id"], title=rec["title"], text=rec["text"])
    corpus.finish()
    queries = Collector(queries_path, "_id")
    for number, rec in json_records(queries_path, "_id", {"text": True}):
        queries.add(number, rec["id"], text=rec["text"])
    queries.finish()
    qrels_path = data_dir / "qrels" / f"{split}.tsv"
    rows = ((n, p[0], p[1], p[2]) for n, p in tsv_rows(qrels_path, 3, skip_header="query-id"))
    qrels = qrels_rows(rows, qrels_path, "line")
    return assemble(corpus, queries, qrels, qrels_path, "line", split)
