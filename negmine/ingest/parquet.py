"""negmine's Parquet layout: corpus.parquet, queries.parquet, qrels/{split}.parquet or qrels.parquet."""

from __future__ import annotations

from pathlib import Path


from negmine.io import LazyTable, read_table
from negmine.schemas import CORPUS, QRELS, QUERIES
from negmine.ingest.records import Collector, Dataset, assemble, qrels_rows


def read_parquet_dataset(data_dir: str | Path, split: str = "train", corpus_file: Path | None = None) -> Dataset:
    data_dir = Path(data_dir)
    corpus_path, queries_path = data_dir / "corpus.parquet", data_dir / "queries.parquet"
    qrels_path = data_dir / "qrels" / f"{split}.parquet"
    if not qrels_path.exists():
        qrels_path = data_dir / "qrels.parquet"
    corpus_table = LazyTable(corpus_path, CORPUS, "corpus")  # read a slice at a time
    queries_table = read_table(queries_path, QUERIES, "queries")
    qrels_table = read_table(qrels_path, QRELS, "qrels")
    corpus = Collector(corpus_path, "doc_id", unit="row", schema=CORPUS, sink=corpus_file)
    row = 0
    for part in corpus_table.slices(Collector.BATCH_ROWS):
        for did, title, text in zip(*(part.column(c).to_pylist() for c in CORPUS.names)):
            corpus.add(row, did, title=title, text=text)
            row += 1
    corpus.finish()
    queries = Collector(queries_path, "query_id", unit="row")
    for row, (qid, text) in enumerate(zip(*(queries_table.column(c).to_pylist() for c in QUERIES.names))):
        queries.add(row, qid, text=text)
    queries.finish()
    columns = [qrels_table.column(c).to_pylist() for c in QRELS.names]
    rows = ((row, q, d, str(r)) for row, (q, d, r) in enumerate(zip(*columns)))
    qrels = qrels_rows(rows, qrels_path, "row")
    return assemble(corpus, queries, qrels, qrels_path, "row", split)
