"""MS MARCO TSV: collection.tsv, queries.{split}.tsv or queries.tsv, qrels.{split}.tsv (TREC: qid 0 pid rel)."""

from __future__ import annotations

from pathlib import Path


from negmine.errors import BadInputError
from negmine.schemas import CORPUS
from negmine.ingest.records import Collector, Dataset, assemble, lines, qrels_rows, tsv_rows


def read_msmarco(data_dir: str | Path, split: str = "train", corpus_file: Path | None = None) -> Dataset:
    data_dir = Path(data_dir)
    corpus_path = data_dir / "collection.tsv"
    corpus = Collector(corpus_path, "pid", schema=CORPUS, sink=corpus_file)
    for number, (pid, text) in tsv_rows(corpus_path, 2):
        corpus.add(number, pid.strip(), title=None, text=text)
    corpus.finish()
    queries_path = data_dir / f"queries.{split}.tsv"
    if not queries_path.exists():
        queries_path = data_dir / "queries.tsv"
    queries = Collector(queries_path, "qid")
    for number, (qid, text) in tsv_rows(queries_path, 2):
        queries.add(number, qid.strip(), text=text)
    queries.finish()
    qrels_path = data_dir / f"qrels.{split}.tsv"
    rows = []
    for number, line in lines(qrels_path):
        parts = line.split()
        if len(parts) != 4:
            raise BadInputError(qrels_path, f"expected 4 columns (qid iter pid relevance), found {len(parts)}", line=number)
        rows.append((number, parts[0], parts[2], parts[3]))
    qrels = qrels_rows(iter(rows), qrels_path, "line")
    return assemble(corpus, queries, qrels, qrels_path, "line", split)
