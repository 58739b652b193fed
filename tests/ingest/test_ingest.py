"""ingest: the three layouts, and every bad-input class with its exact message."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negmine.errors import BadInputError
from negmine.ingest import ingest, records

from conftest import SAMPLE


def test_beir_reads_and_skips_queries_without_positives(beir_dir):
    ds = ingest(beir_dir)
    assert ds.corpus.column("doc_id").to_pylist() == ["d1", "d2", "d3"]
    assert ds.corpus.column("title").to_pylist() == ["Cats", "", None]
    assert ds.queries.column("query_id").to_pylist() == ["q1", "q2"]
    assert ds.qrels.num_rows == 3
    assert ds.stats["queries_not_in_split"] == 1
    assert ds.stats["positives"] == 2


def test_query_judged_only_negative_is_skipped_and_counted(beir_dir):
    (beir_dir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t0\n")
    ds = ingest(beir_dir)
    assert ds.queries.column("query_id").to_pylist() == ["q1"]
    assert ds.stats["queries_judged_without_positive"] == 1


def test_sample_data_is_valid():
    ds = ingest(SAMPLE, split="train")
    assert ds.corpus.num_rows == 300
    assert ds.stats["queries_with_positives"] == 60


def test_msmarco_layout(tmp_path):
    (tmp_path / "collection.tsv").write_text("0\tcats purr\n1\tdogs bark\n")
    (tmp_path / "queries.train.tsv").write_text("10\twhat purrs\n")
    (tmp_path / "qrels.train.tsv").write_text("10 0 0 1\n")
    ds = ingest(tmp_path)
    assert ds.corpus.column("doc_id").to_pylist() == ["0", "1"]
    assert ds.qrels.to_pylist() == [{"query_id": "10", "doc_id": "0", "relevance": 1}]


def test_parquet_layout(tmp_path):
    pq.write_table(pa.table({"doc_id": ["a", "b"], "title": [None, "t"], "text": ["x", "y"]}), tmp_path / "corpus.parquet")
    pq.write_table(pa.table({"query_id": ["q"], "text": ["x?"]}), tmp_path / "queries.parquet")
    pq.write_table(pa.table({"query_id": ["q"], "doc_id": ["b"], "relevance": [1]}), tmp_path / "qrels.parquet")
    ds = ingest(tmp_path)
    assert ds.qrels.schema.field("relevance").type == pa.int32()


def _fails(path_fn, content, expected, beir_dir, mode="w"):
    path = path_fn(beir_dir)
    if mode == "wb":
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(BadInputError) as info:
        ingest(beir_dir)
    assert str(info.value) == expected.format(path=path)
    assert info.value.exit_code == 2


corpus = lambda d: d / "corpus.jsonl"  # noqa: E731
queries = lambda d: d / "queries.jsonl"  # noqa: E731
qrels = lambda d: d / "qrels" / "train.tsv"  # noqa: E731


@pytest.mark.parametrize(
    "path_fn, content, expected",
    [
        (corpus, '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "b"\n', "{path}, line 2: invalid JSON (Expecting ',' delimiter at column 26)"),
        (corpus, '{"_id": "d1", "text": "a"}\n["d2"]\n', "{path}, line 2: expected a JSON object, found list"),
        (corpus, '{"text": "a"}\n', "{path}, line 1, field '_id': missing id"),
        (corpus, '{"_id": "d1"}\n', "{path}, line 1, field 'text': missing field"),
        (corpus, '{"_id": "d1", "text": 5}\n', "{path}, line 1, field 'text': expected a string, found int"),
        (corpus, '{"_id": [1], "text": "a"}\n', "{path}, line 1, field '_id': id must be a string or integer, found list"),
        (corpus, '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', "{path}, line 2, field '_id': duplicate id 'd1' (first seen at line 1)"),
        (corpus, '{"_id": "d1", "title": "", "text": "   "}\n', "{path}, line 1, field 'text': empty text for id 'd1'"),
        (queries, '{"_id": "q1", "text": ""}\n', "{path}, line 1, field 'text': empty text for id 'q1'"),
        (qrels, "query-id\tcorpus-id\tscore\nq1\td1\n", "{path}, line 2: expected 3 tab-separated columns, found 2"),
        (qrels, "query-id\tcorpus-id\tscore\nq1\td1\thigh\n", "{path}, line 2, field 'relevance': relevance must be an integer, found 'high'"),
        (qrels, "query-id\tcorpus-id\tscore\nq9\td1\t1\n", "{path}, line 2, field 'query-id': unknown query 'q9' (not in queries.jsonl)"),
        (qrels, "query-id\tcorpus-id\tscore\nq1\td9\t1\n", "{path}, line 2, field 'corpus-id': unknown document 'd9' (not in corpus.jsonl)"),
        (qrels, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t0\n", "{path}, line 3: conflicting judgements for ('q1', 'd1'): relevance 0 at line 3, relevance 1 at line 2"),
        (corpus, "", "{path}: corpus is empty"),
    ],
)
def test_bad_input_names_file_line_and_field(beir_dir, path_fn, content, expected):
    _fails(path_fn, content, expected, beir_dir)


def test_non_utf8_names_the_line(beir_dir):
    _fails(corpus, b'{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "\xff"}\n', "{path}, line 2: not valid UTF-8 (invalid start byte at byte 23)", beir_dir, mode="wb")


def test_bom_and_crlf_are_accepted(beir_dir):
    (beir_dir / "corpus.jsonl").write_bytes(b'\xef\xbb\xbf{"_id": "d1", "text": "a"}\r\n{"_id": "d2", "text": "b"}\r\n{"_id": "d3", "text": "c"}\r\n')
    assert ingest(beir_dir).corpus.column("doc_id").to_pylist() == ["d1", "d2", "d3"]


def test_missing_file_and_unknown_layout(tmp_path, beir_dir):
    (beir_dir / "qrels" / "train.tsv").unlink()
    with pytest.raises(BadInputError, match="train.tsv: file does not exist"):
        ingest(beir_dir)
    with pytest.raises(BadInputError, match="cannot tell the layout"):
        ingest(tmp_path)


def test_parquet_wrong_schema_names_column(tmp_path):
    pq.write_table(pa.table({"doc_id": ["a"], "body": ["x"]}), tmp_path / "corpus.parquet")
    pq.write_table(pa.table({"query_id": ["q"], "text": ["x?"]}), tmp_path / "queries.parquet")
    pq.write_table(pa.table({"query_id": ["q"], "doc_id": ["a"], "relevance": [1]}), tmp_path / "qrels.parquet")
    with pytest.raises(BadInputError) as info:
        ingest(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'corpus.parquet'}, field 'title': missing column; corpus needs columns "
        "['doc_id', 'title', 'text'], file has ['doc_id', 'body']"
    )


def test_parquet_duplicate_id_names_row(tmp_path):
    pq.write_table(pa.table({"doc_id": ["a", "a"], "title": [None, None], "text": ["x", "y"]}), tmp_path / "corpus.parquet")
    pq.write_table(pa.table({"query_id": ["q"], "text": ["x?"]}), tmp_path / "queries.parquet")
    pq.write_table(pa.table({"query_id": ["q"], "doc_id": ["a"], "relevance": [1]}), tmp_path / "qrels.parquet")
    with pytest.raises(BadInputError) as info:
        ingest(tmp_path)
    assert str(info.value) == f"{tmp_path / 'corpus.parquet'}, field 'doc_id': row 1: duplicate id 'a' (first seen at row 0)"


def test_a_corpus_is_collected_in_arrow_batches(tmp_path, monkeypatch):
    """Rows become record batches as they come (BATCH_ROWS at a time): the same table, and a duplicate
    id in a later batch is still caught with the line of its first occurrence."""
    from negmine import ingest as ingest_mod

    whole = ingest_mod.ingest(SAMPLE)
    monkeypatch.setattr(records.Collector, "BATCH_ROWS", 7)
    batched = ingest_mod.ingest(SAMPLE)
    assert batched.corpus.column("doc_id").num_chunks > 1
    assert batched.corpus.equals(whole.corpus) and batched.queries.equals(whole.queries) and batched.qrels.equals(whole.qrels)
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    lines = (data / "corpus.jsonl").read_text().splitlines()
    first = json.loads(lines[0])["_id"]
    (data / "corpus.jsonl").write_text("\n".join(lines + [json.dumps({"_id": first, "title": "", "text": "again"})]) + "\n")
    with pytest.raises(BadInputError, match=rf"duplicate id '{first}' \(first seen at line 1\)") as raised:
        ingest_mod.ingest(data)
    assert raised.value.line == len(lines) + 1


@pytest.mark.parametrize("layout", ["beir", "msmarco", "parquet"])
def test_a_corpus_written_as_it_is_read_is_the_same_table(tmp_path, monkeypatch, layout):
    """ingest(corpus_file=…) writes each batch of the corpus to that file as a row group and returns it
    as a LazyTable: the same rows as the in-memory table; up to one batch, the bytes write_table gives."""
    from negmine import ingest as ingest_mod
    from negmine.io import LazyTable, read_table, write_table
    from negmine.schemas import CORPUS

    data = tmp_path / "data"
    whole = ingest_mod.ingest(SAMPLE)
    if layout == "beir":
        shutil.copytree(SAMPLE, data)
    else:
        data.mkdir()
        if layout == "parquet":
            write_table(whole.corpus, data / "corpus.parquet", CORPUS)
            pq.write_table(whole.queries, data / "queries.parquet")
            pq.write_table(whole.qrels, data / "qrels.parquet")
        else:
            with open(data / "collection.tsv", "w") as f:
                for d, t in zip(whole.corpus.column("doc_id").to_pylist(), whole.corpus.column("text").to_pylist()):
                    f.write(f"{d}\t{t}\n")
            (data / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in zip(*(whole.queries.column(c).to_pylist() for c in ("query_id", "text")))))
            (data / "qrels.train.tsv").write_text("".join(f"{q} 0 {d} {r}\n" for q, d, r in zip(*(whole.qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "relevance")))))
    expected = ingest_mod.ingest(data)
    write_table(expected.corpus, tmp_path / "expected.parquet", CORPUS)
    streamed = ingest_mod.ingest(data, corpus_file=tmp_path / "streamed.parquet")
    assert isinstance(streamed.corpus, LazyTable) and streamed.stats == expected.stats
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "expected.parquet").read_bytes()
    assert streamed.queries.equals(expected.queries) and streamed.qrels.equals(expected.qrels)
    monkeypatch.setattr(records.Collector, "BATCH_ROWS", 7)
    ingest_mod.ingest(data, corpus_file=tmp_path / "groups.parquet")
    rows = expected.corpus.num_rows
    assert pq.ParquetFile(tmp_path / "groups.parquet").metadata.num_row_groups == -(-rows // 7)
    assert read_table(tmp_path / "groups.parquet", CORPUS).equals(expected.corpus)


def test_an_invalid_dataset_leaves_no_corpus_file(tmp_path, beir_dir):
    from negmine.rundir import Run
    from negmine.runners.ingest import ingest_stage

    (beir_dir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnope\t1\n")
    with pytest.raises(BadInputError, match="unknown document 'nope'"):
        ingest(beir_dir, corpus_file=tmp_path / "corpus.parquet")
    assert not (tmp_path / "corpus.parquet").exists()
    run = Run.open(tmp_path / "run")
    with pytest.raises(BadInputError, match="unknown document 'nope'"):
        ingest_stage(run, beir_dir)
    assert sorted(p.name for p in run.path.iterdir() if p.name.startswith(("corpus", ".corpus"))) == []


def test_a_parquet_corpus_is_read_in_slices_and_rows_are_numbered_across_them(tmp_path, monkeypatch):
    ids = [f"d{i}" for i in range(20)] + ["d3"]
    pq.write_table(pa.table({"doc_id": ids, "title": [None] * 21, "text": ["x"] * 21}), tmp_path / "corpus.parquet", row_group_size=6)
    pq.write_table(pa.table({"query_id": ["q"], "text": ["x?"]}), tmp_path / "queries.parquet")
    pq.write_table(pa.table({"query_id": ["q"], "doc_id": ["d1"], "relevance": [1]}), tmp_path / "qrels.parquet")
    monkeypatch.setattr(records.Collector, "BATCH_ROWS", 8)
    with pytest.raises(BadInputError) as info:
        ingest(tmp_path)
    assert str(info.value) == f"{tmp_path / 'corpus.parquet'}, field 'doc_id': row 20: duplicate id 'd3' (first seen at row 3)"


def test_a_streamed_corpus_keeps_no_python_object_per_document(tmp_path, monkeypatch):
    """With corpus_file, what ingest holds in Python objects while it reads is one batch of rows, not
    one entry per document: ids are checked as an Arrow column (not a dict), their line numbers kept in
    a compact array. 40,000 documents in batches of 1,000: a dict of their ids alone would be ~5 MB."""
    import tracemalloc

    from negmine import ingest as ingest_mod

    docs = 40_000
    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"document-{i:08d}", "text": "a b"}) + "\n" for i in range(docs)))
    (data / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "a?"}) + "\n")
    (data / "qrels" / "train.tsv").write_text(f"query-id\tcorpus-id\tscore\nq\tdocument-{docs - 1:08d}\t1\n")
    monkeypatch.setattr(records.Collector, "BATCH_ROWS", 1000)
    ingest_mod.ingest(SAMPLE, corpus_file=tmp_path / "warm.parquet")  # the modules it imports on first use
    tracemalloc.start()
    try:
        ds = ingest_mod.ingest(data, corpus_file=tmp_path / "corpus.parquet")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.stats["documents"] == docs and ds.qrels.num_rows == 1
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MB of Python objects at the peak"
