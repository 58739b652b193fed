"""pairs: pair datasets (query, positive) from files, save_to_disk directories and in-memory tables."""

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import ipc

from negmine.errors import BadInputError
from negmine.ingest.pairs import is_pair_source, read_pairs, text_id

ROWS = [
    {"anchor": "what purrs", "positive": "Cats purr."},
    {"anchor": "what barks", "positive": "Dogs bark."},
    {"anchor": "what purrs", "positive": "Kittens purr too."},
]


def _tables(ds):
    return ds.corpus.to_pylist(), ds.queries.to_pylist(), ds.qrels.to_pylist()


def _write(path, rows=ROWS):
    """``rows`` written to ``path`` in the format its suffix names."""
    suffix = path.suffix
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import csv

        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def _raises(match, *args, **kwargs) -> BadInputError:
    with pytest.raises(BadInputError, match=match) as info:
        read_pairs(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv", ".tsv"])
def test_each_file_format_gives_the_same_tables(tmp_path, suffix):
    ds = read_pairs(_write(tmp_path / f"pairs{suffix}"))
    reference = read_pairs(pa.Table.from_pylist(ROWS))
    assert _tables(ds) == _tables(reference)
    q_purr, q_bark = text_id("q", "what purrs"), text_id("q", "what barks")
    assert ds.queries.to_pylist() == [{"query_id": q_purr, "text": "what purrs"}, {"query_id": q_bark, "text": "what barks"}]
    assert ds.corpus.column("text").to_pylist() == ["Cats purr.", "Dogs bark.", "Kittens purr too."]
    assert ds.corpus.column("title").to_pylist() == [None, None, None]
    assert ds.stats["query_column"] == "anchor" and ds.stats["positive_column"] == "positive"


def test_derived_ids_are_documented_hash_of_normalised_text():
    assert text_id("d", "Cats purr.") == "d" + hashlib.sha256(b"Cats purr.").hexdigest()[:16]
    assert text_id("q", "  caf\u0065\u0301 \n") == text_id("q", "caf\u00e9")  # NFC, surrounding whitespace
    assert text_id("d", "x", title="t") == "d" + hashlib.sha256(b"t\x1fx").hexdigest()[:16]


def test_repeated_anchor_is_one_query_with_several_positives():
    ds = read_pairs(pa.Table.from_pylist(ROWS))
    q_purr = text_id("q", "what purrs")
    assert [r["doc_id"] for r in ds.qrels.to_pylist() if r["query_id"] == q_purr] == [
        text_id("d", "Cats purr."), text_id("d", "Kittens purr too.")
    ]
    assert set(ds.qrels.column("relevance").to_pylist()) == {1}
    assert ds.qrels.schema.field("relevance").type == pa.int32()
    assert ds.stats["queries_with_several_positives"] == 1 and ds.stats["qrels"] == 3


def test_identical_positive_texts_are_one_document():
    rows = [{"query": "a?", "answer": "Same text."}, {"query": "b?", "answer": " Same text."}, {"query": "a?", "answer": "Same text."}]
    ds = read_pairs(pa.Table.from_pylist(rows))
    assert ds.corpus.to_pylist() == [{"doc_id": text_id("d", "Same text."), "title": None, "text": "Same text."}]
    assert ds.qrels.num_rows == 2 and ds.stats["duplicate_pairs"] == 1


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["anchor", "positive", "negative"], ("anchor", "positive")),
        (["query", "answer"], ("query", "answer")),
        (["question", "answers", "context"], ("question", "context")),
        (["query", "positive"], ("query", "positive")),
        (["sentence1", "sentence2", "score"], ("sentence1", "sentence2")),
    ],
)
def test_columns_are_detected_from_common_names(columns, expected):
    ds = read_pairs(pa.table({name: [f"{name} 1"] for name in columns}))
    assert (ds.stats["query_column"], ds.stats["positive_column"]) == expected
    assert ds.queries.column("text").to_pylist() == [f"{expected[0]} 1"]
    assert ds.corpus.column("text").to_pylist() == [f"{expected[1]} 1"]


def test_a_list_of_positives_in_one_cell(tmp_path):
    rows = [{"query": "a?", "pos": ["A.", "B."], "neg": ["C."]}, {"query": "b?", "pos": ["B."], "neg": []}]
    ds = read_pairs(_write(tmp_path / "flag.jsonl", rows))
    assert ds.corpus.column("text").to_pylist() == ["A.", "B."]
    assert [(r["query_id"], r["doc_id"]) for r in ds.qrels.to_pylist()] == [
        (text_id("q", "a?"), text_id("d", "A.")), (text_id("q", "a?"), text_id("d", "B.")), (text_id("q", "b?"), text_id("d", "B."))
    ]
    assert (ds.stats["rows"], ds.stats["pairs"], ds.stats["duplicate_pairs"]) == (2, 3, 0)
    with_ids = read_pairs(pa.Table.from_pylist([{"query": "a?", "pos": ["A.", "B."], "pos_id": ["p1", "p2"]}]))
    assert with_ids.corpus.column("doc_id").to_pylist() == ["p1", "p2"]
    _raises(r"row 0: expected a list of 2 ids, one per positive", pa.Table.from_pylist([{"query": "a?", "pos": ["A.", "B."], "pos_id": ["p1"]}]))
    rows[1]["pos"] = ["B.", 3]
    _raises(r"line 2, field 'pos': expected a string, found int", _write(tmp_path / "bad.jsonl", rows))
    rows[1]["pos"] = []
    _raises(r"line 2, field 'pos': empty list", _write(tmp_path / "bad.jsonl", rows))


def test_explicit_columns(tmp_path):
    table = pa.table({"q": ["x?"], "doc": ["x."], "question": ["other"], "context": ["other."]})
    ds = read_pairs(table, query_column="q", positive_column="doc")
    assert ds.queries.column("text").to_pylist() == ["x?"] and ds.corpus.column("text").to_pylist() == ["x."]
    ds = read_pairs(table, positive_column="context")  # the query column from the same pair list
    assert ds.queries.column("text").to_pylist() == ["other"]


def test_unknown_columns_are_an_error_listing_the_columns(tmp_path):
    path = _write(tmp_path / "pairs.csv", [{"left": "a", "right": "b"}])
    error = _raises(r"cannot tell which columns.*found columns \['left', 'right'\]", path)
    assert error.path == str(path)
    _raises(r"no column 'query' \(query_column\); the columns are \['left', 'right'\]", path, query_column="query", positive_column="right")


def test_ids_in_the_data_are_kept(tmp_path):
    rows = [
        {"query_id": "q1", "query": "a?", "positive_id": "p1", "positive": "A."},
        {"query_id": "q1", "query": "a?", "positive_id": "p2", "positive": "B."},
        {"query_id": "q2", "query": "b?", "positive_id": "p1", "positive": "A."},
    ]
    ds = read_pairs(_write(tmp_path / "pairs.jsonl", rows))
    assert ds.queries.column("query_id").to_pylist() == ["q1", "q2"]
    assert ds.corpus.column("doc_id").to_pylist() == ["p1", "p2"]
    assert ds.qrels.select(["query_id", "doc_id"]).to_pylist() == [
        {"query_id": "q1", "doc_id": "p1"}, {"query_id": "q1", "doc_id": "p2"}, {"query_id": "q2", "doc_id": "p1"}
    ]
    rows[2]["positive"] = "Not A."
    error = _raises(r"line 3.*id 'p1' was given to another text at line 1", _write(tmp_path / "bad.jsonl", rows))
    assert error.line == 3


def test_corpus_adds_documents(tmp_path):
    corpus = _write(tmp_path / "corpus.jsonl", [
        {"_id": "c1", "title": "Birds", "text": "Birds sing."},
        {"_id": "c2", "text": "Cats purr."},  # a positive already: not a second copy
        {"_id": "c3", "title": " ", "text": "Fish swim."},
    ])  # fmt: skip
    ds = read_pairs(pa.Table.from_pylist(ROWS), corpus=corpus)
    assert ds.corpus.to_pylist()[3:] == [
        {"doc_id": "c1", "title": "Birds", "text": "Birds sing."}, {"doc_id": "c3", "title": None, "text": "Fish swim."}
    ]
    assert ds.stats["documents"] == 5 and ds.stats["documents_from_corpus"] == 2 and ds.qrels.num_rows == 3
    no_ids = read_pairs(pa.Table.from_pylist(ROWS), corpus=pa.table({"text": ["Fish swim.", "Dogs bark."]}))
    assert no_ids.corpus.column("doc_id").to_pylist()[3:] == [text_id("d", "Fish swim.")]
    as_list = read_pairs(pa.Table.from_pylist(ROWS), corpus=["Fish swim.", "Dogs bark."])
    assert _tables(as_list) == _tables(no_ids)


def test_corpus_without_text_column_and_id_clash(tmp_path):
    _raises(r"no column 'text' in the corpus; the columns are \['body', 'id'\]", pa.Table.from_pylist(ROWS), corpus=pa.table({"body": ["x"], "id": ["1"]}))
    pairs = pa.table({"query": ["a?"], "doc_id": ["p1"], "positive": ["A."]})
    corpus = _write(tmp_path / "corpus.csv", [{"doc_id": "p2", "text": "B."}, {"doc_id": "p1", "text": "Not A."}])
    _raises(r"corpus\.csv, line 3: id 'p1' was given to another text at <pyarrow Table>, row 0", pairs, corpus=corpus)


@pytest.mark.parametrize(
    "suffix, where",
    [(".jsonl", "line 2"), (".csv", "line 3"), (".tsv", "line 3"), (".parquet", "row 1")],
)
def test_empty_cell_names_file_row_and_column(tmp_path, suffix, where):
    rows = [{"query": "a?", "positive": "A."}, {"query": "b?", "positive": "  "}]
    path = _write(tmp_path / f"pairs{suffix}", rows)
    error = _raises("empty cell", path)
    assert str(error).startswith(f"{path}, {where}" if where.startswith("line") else f"{path}, field 'positive': {where}:")
    assert error.field == "positive"


def test_missing_and_non_string_cells(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "a?", "positive": "A."}\n\n{"query": 7, "positive": "B."}\n')
    error = _raises(r"line 3, field 'query': expected a string, found int '7'", path)
    assert (error.path, error.line, error.field) == (str(path), 3, "query")
    path.write_text('{"query": "a?", "positive": "A."}\n{"query": "b?"}\n')
    _raises(r"line 2, field 'positive': empty cell", path)
    table = pa.table({"anchor": ["a?", "b?"], "positive": ["A.", None]})
    _raises(r"<pyarrow Table>, field 'positive': row 1: empty cell", table)
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"anchor": ["a?", "b?"], "positive": [1.5, 2.5]}), parquet)
    _raises(r"pairs\.parquet, field 'positive': row 0: expected a string, found float", parquet)


def test_ragged_csv_row_names_the_line(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('query,positive\n"a?","A line\nthat goes on"\n\nb?,B.,extra\n')
    error = _raises(r"line 5: expected 2 columns \['query', 'positive'\], found 3", path)
    assert (error.path, error.line) == (str(path), 5)
    path.write_bytes(b"\xef\xbb\xbfquery,positive\r\na?,A.\r\nb?\r\n")  # BOM, CRLF
    _raises(r"line 3: expected 2 columns", path)


def test_csv_with_quotes_bom_and_crlf(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes(b'\xef\xbb\xbfquery,positive\r\n"a, b?","He said ""hi""\r\nand left."\r\n')
    ds = read_pairs(path)
    assert ds.queries.column("text").to_pylist() == ["a, b?"]
    assert ds.corpus.column("text").to_pylist() == ['He said "hi"\r\nand left.']
    path.write_bytes(b"query,positive\na?,\xff\n")
    _raises(r"line 2: not valid UTF-8", path)


def test_empty_files(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("\n")
    _raises("empty file", path)
    path.write_text("query,positive\n")
    _raises("no pairs", path)
    _raises("file does not exist", tmp_path / "absent.jsonl")
    _raises(r"cannot read pairs from a \.txt file", _write(tmp_path / "pairs.txt"))


def test_output_is_deterministic(tmp_path):
    path = _write(tmp_path / "pairs.csv", ROWS * 3)
    corpus = _write(tmp_path / "corpus.jsonl", [{"text": "Fish swim."}, {"text": "Birds sing."}])

    def serialised(ds):
        out = []
        for table in (ds.corpus, ds.queries, ds.qrels):
            sink = io.BytesIO()
            pq.write_table(table, sink)
            out.append(sink.getvalue())
        return out

    assert serialised(read_pairs(path, corpus=corpus)) == serialised(read_pairs(path, corpus=corpus))
    assert read_pairs(path, corpus=corpus).corpus.column("text").to_pylist() == [
        "Cats purr.", "Dogs bark.", "Kittens purr too.", "Fish swim.", "Birds sing."
    ]


def _arrow_stream(table, path):
    with ipc.new_stream(path, table.schema) as writer:
        writer.write_table(table)


def test_save_to_disk_directory_read_with_pyarrow(tmp_path):
    """The layout save_to_disk writes (state.json listing Arrow stream shards), without the datasets package."""
    table = pa.Table.from_pylist(ROWS)
    d = tmp_path / "ds"
    d.mkdir()
    _arrow_stream(table.slice(0, 2), d / "data-00000-of-00002.arrow")
    _arrow_stream(table.slice(2), d / "data-00001-of-00002.arrow")
    (d / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00002.arrow"}, {"filename": "data-00001-of-00002.arrow"}]}))
    (d / "dataset_info.json").write_text("{}")
    assert is_pair_source(d) and not is_pair_source(tmp_path) and is_pair_source(table)
    assert _tables(read_pairs(d)) == _tables(read_pairs(table))
    root = tmp_path / "dict"
    root.mkdir()
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["test", "train"]}))
    d.rename(root / "train")
    assert _tables(read_pairs(root)) == _tables(read_pairs(table))
    _raises("not a directory written by datasets' save_to_disk", tmp_path)


def test_datasets_package(tmp_path):
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list(ROWS)
    dataset.save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": dataset, "dev": dataset.select([1])}).save_to_disk(str(tmp_path / "dd"))
    expected = _tables(read_pairs(pa.Table.from_pylist(ROWS)))
    assert _tables(read_pairs(tmp_path / "ds")) == expected
    assert _tables(read_pairs(tmp_path / "dd")) == expected
    assert _tables(read_pairs(dataset)) == expected
    assert _tables(read_pairs(datasets.DatasetDict({"train": dataset}))) == expected
    reordered = dataset.select([2, 0])  # a selection: the rows it names, in its order
    assert read_pairs(reordered).corpus.column("text").to_pylist() == ["Kittens purr too.", "Cats purr."]


def test_polars_dataframe():
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame(ROWS)
    assert _tables(read_pairs(frame)) == _tables(read_pairs(pa.Table.from_pylist(ROWS)))
    _raises(r"<polars DataFrame>, field 'positive': row 1: empty cell", pl.DataFrame({"query": ["a", "b"], "positive": ["A", ""]}))


def test_pandas_dataframe():
    pd = pytest.importorskip("pandas")
    assert _tables(read_pairs(pd.DataFrame(ROWS))) == _tables(read_pairs(pa.Table.from_pylist(ROWS)))
    _raises(r"<pandas DataFrame>, field 'positive': row 1: expected a string, found int", pd.DataFrame({"query": ["a", "b"], "positive": ["A", 3]}))
    _raises(r"row 0: empty cell", pd.DataFrame({"query": ["a", "b"], "positive": [None, "B"]}))


def test_unsupported_object():
    _raises(r"<int>: expected a file, a datasets.Dataset", 3)
