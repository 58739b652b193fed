"""Pair datasets through the ingest stage, `negmine mine` and the Python API (negmine.ingest.pairs)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import negmine
from negmine.ingest import ingest

from conftest import SAMPLE, invoke


@pytest.fixture(scope="module")
def pairs_rows():
    """sample_data as (anchor, positive) pairs: one row per judgement, texts only, no ids, no corpus."""
    beir = ingest(SAMPLE)
    queries = dict(zip(beir.queries.column("query_id").to_pylist(), beir.queries.column("text").to_pylist()))
    corpus = beir.corpus.to_pydict()
    docs = {d: (t + ". " + x if t else x) for d, t, x in zip(corpus["doc_id"], corpus["title"], corpus["text"])}
    qrels = beir.qrels.to_pydict()
    rows = [{"anchor": queries[q], "positive": docs[d]} for q, d in zip(qrels["query_id"], qrels["doc_id"])]
    others = [{"text": text} for d, text in docs.items() if d not in set(qrels["doc_id"])]
    return rows, others


@pytest.fixture
def pair_file(tmp_path, pairs_rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pairs_rows[0]))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in pairs_rows[1]))
    return path, corpus


def test_mine_reads_a_pair_file_and_an_extra_corpus(pair_file, tmp_path, model_path):
    pairs, corpus = pair_file
    run = tmp_path / "run"
    result = invoke("mine", "--data", pairs, "--corpus", corpus, "--out", run, "--model", model_path, "--max-seq-length", 64, "--strategy", "topk", "--json")
    assert result.exit_code == 0, result.output
    ingest_stats = json.loads(result.stdout)["ingest"]["stats"]
    assert ingest_stats["format"] == "pairs" and (ingest_stats["query_column"], ingest_stats["positive_column"]) == ("anchor", "positive")
    assert ingest_stats["documents_from_corpus"] == len(pair_file[1].read_text().splitlines())
    queries = pq.read_table(run / "queries.parquet")
    assert queries.num_rows == len({json.loads(line)["anchor"] for line in pairs.read_text().splitlines()})
    negatives = pq.read_table(run / "negatives_topk.parquet")
    assert negatives.num_rows > 0 and all(q.startswith("q") for q in negatives.column("query_id").to_pylist())


def test_a_repeated_anchor_is_one_query_with_several_positives(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("question,context\nwhat purrs,Cats purr.\nwhat purrs,Kittens purr too.\nwhat barks,Dogs bark.\n")
    data = ingest(path)
    assert data.queries.num_rows == 2 and data.qrels.num_rows == 3 and data.corpus.num_rows == 3
    per_query = data.qrels.group_by("query_id").aggregate([("doc_id", "count")]).column("doc_id_count").to_pylist()
    assert sorted(per_query) == [1, 2]


@pytest.mark.parametrize(("name", "content", "says"), [
    ("missing-column.jsonl", '{"anchor": "a", "answer_text": "b"}\n', ["missing-column.jsonl", "columns"]),
    ("empty-cell.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "", "positive": "c"}\n', ["empty-cell.jsonl", "line 2", "anchor"]),
    ("not-a-string.jsonl", '{"anchor": "a", "positive": 7}\n', ["not-a-string.jsonl", "line 1", "positive"]),
    ("ragged.csv", "anchor,positive\na,b\nc,d,e\n", ["ragged.csv", "line 3"]),
])
def test_a_bad_pair_file_exits_2_naming_file_row_and_column_and_writes_nothing(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_text(content)
    run = tmp_path / "run"
    result = invoke("ingest", "--data", path, "--out", run)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2, result.output
    assert all(s in message for s in says), message
    assert not list(run.glob("*.parquet"))


def test_pair_options_on_a_beir_directory_are_bad_input(tmp_path):
    result = invoke("ingest", "--data", SAMPLE, "--out", tmp_path / "run", "--query-column", "anchor")
    assert result.exit_code == 2 and "--query-column" in result.stderr


def test_a_save_to_disk_directory_and_a_parquet_file_are_detected(tmp_path, pairs_rows):
    datasets = pytest.importorskip("datasets")
    table = pa.Table.from_pylist(pairs_rows[0])
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"))
    pq.write_table(table, tmp_path / "pairs.parquet")
    from_disk, from_parquet = ingest(tmp_path / "saved"), ingest(tmp_path / "pairs.parquet")
    assert from_disk.stats["format"] == from_parquet.stats["format"] == "pairs"
    assert from_disk.qrels.equals(from_parquet.qrels) and from_disk.corpus.equals(from_parquet.corpus)


def test_the_api_takes_a_dataframe_and_reruns_only_when_its_content_changes(tmp_path, pairs_rows, model_path):
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame(pairs_rows[0])
    options = {"model": model_path, "max_seq_length": 64, "strategy": "topk"}
    first = negmine.mine(frame, tmp_path / "run", **options)
    assert first.table("queries").num_rows > 0
    assert all(s.skipped for s in negmine.mine(pl.DataFrame(pairs_rows[0]), tmp_path / "run", **options).stages)
    changed = negmine.mine(frame.head(len(frame) - 1), tmp_path / "run", **options)
    assert not changed.stages[0].skipped


def test_a_datasets_dataset_gives_the_same_tables_as_its_file(tmp_path, pairs_rows, pair_file):
    datasets = pytest.importorskip("datasets")
    in_memory = ingest(datasets.Dataset.from_list(pairs_rows[0]))
    from_file = ingest(pair_file[0])
    assert in_memory.queries.equals(from_file.queries) and in_memory.qrels.equals(from_file.qrels) and in_memory.corpus.equals(from_file.corpus)
