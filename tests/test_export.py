"""negmine export: pure exporters on hand-written tables, and each file loaded by the library that consumes it."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negmine.errors import BadInputError
from negmine.export import flagembedding_export, sentence_transformers_export, tevatron_export
from negmine.schemas import NEGATIVES

from conftest import SAMPLE, invoke





def _tables():
    corpus = pa.table({"doc_id": ["d1", "d2", "d3", "d4", "d5"], "title": ["T1", None, "", "T4", None], "text": ["one", "two", "three", "four", "five"]})
    queries = pa.table({"query_id": ["q2", "q1"], "text": ["second", "first"]})
    qrels = pa.table({"query_id": ["q1", "q1", "q2"], "doc_id": ["d1", "d2", "d3"], "relevance": pa.array([1, 1, 1], pa.int32())})
    rows = [  # (query, pos, neg, neg_rank); q1/d2 has one negative fewer
        ("q1", "d1", "d4", 2), ("q1", "d1", "d3", 1), ("q1", "d2", "d4", 1),
        ("q2", "d3", "d5", 1), ("q2", "d3", "d1", 2),
    ]
    negatives = pa.table(
        {
            "query_id": [r[0] for r in rows], "pos_id": [r[1] for r in rows], "neg_id": [r[2] for r in rows],
            "neg_rank": pa.array([r[3] for r in rows], pa.int32()), "strategy": ["topk"] * len(rows),
        }
        | {f.name: pa.nulls(len(rows), f.type) for f in NEGATIVES if f.name in ("retriever_score", "pos_retriever_score", "ce_score", "pos_ce_score", "source_rank", "cluster_id", "stage")},
        schema=NEGATIVES,
    )
    return negatives, queries, corpus, qrels


def test_n_tuple_drops_short_pairs_and_follows_query_order():
    table, stats = sentence_transformers_export(*_tables())
    assert table.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert table.to_pylist() == [
        {"anchor": "second", "positive": "three", "negative_1": "five", "negative_2": "T1 one"},
        {"anchor": "first", "positive": "T1 one", "negative_1": "three", "negative_2": "T4 four"},
    ]
    assert stats["pairs"] == 3 and stats["pairs_dropped_short"] == 1 and stats["rows"] == 2


def test_n_tuple_with_fewer_columns_keeps_every_pair():
    table, stats = sentence_transformers_export(*_tables(), num_negatives=1)
    assert table.column_names == ["anchor", "positive", "negative_1"]
    assert table.column("negative_1").to_pylist() == ["five", "three", "T4 four"]
    assert stats["pairs_dropped_short"] == 0


def test_triplet_is_one_row_per_negative():
    table, _ = sentence_transformers_export(*_tables(), layout="triplet")
    assert table.column_names == ["anchor", "positive", "negative"]
    assert [(r["anchor"], r["positive"], r["negative"]) for r in table.to_pylist()] == [
        ("second", "three", "five"), ("second", "three", "T1 one"),
        ("first", "T1 one", "three"), ("first", "T1 one", "T4 four"), ("first", "two", "T4 four"),
    ]


def test_labeled_pair_labels_positives_1_and_distinct_negatives_0():
    table, _ = sentence_transformers_export(*_tables(), layout="labeled-pair")
    assert table.column_names == ["anchor", "positive", "label"]
    assert [(r["anchor"], r["positive"], r["label"]) for r in table.to_pylist()] == [
        ("second", "three", 1), ("second", "five", 0), ("second", "T1 one", 0),
        ("first", "T1 one", 1), ("first", "two", 1), ("first", "three", 0), ("first", "T4 four", 0),
    ]


def test_unknown_layout_names_the_choices():
    with pytest.raises(BadInputError) as info:
        sentence_transformers_export(*_tables(), layout="pairs")
    assert str(info.value) == "--layout: unknown sentence-transformers layout 'pairs'; choose from ['labeled-pair', 'n-tuple', 'triplet']"


def test_flagembedding_and_tevatron_records():
    flag, _ = flagembedding_export(*_tables())
    assert flag.to_pylist()[1] == {
        "query": "first", "pos": ["T1 one", "two"], "neg": ["three", "T4 four"],
        "query_id": "q1", "pos_ids": ["d1", "d2"], "neg_ids": ["d3", "d4"], "positive_ids": ["d1", "d2"],
    }
    tev, _ = tevatron_export(*_tables())
    assert tev.to_pylist()[0] == {
        "query_id": "q2",
        "query": "second",
        "positive_passages": [{"docid": "d3", "title": "", "text": "three"}],
        "negative_passages": [{"docid": "d5", "title": "", "text": "five"}, {"docid": "d1", "title": "T1", "text": "one"}],
        "positive_ids": ["d3"],
    }
    assert flagembedding_export(*_tables(), group_ids=False)[0].column_names == ["query", "pos", "neg"]
    assert tevatron_export(*_tables(), group_ids=False)[0].column_names == ["query_id", "query", "positive_passages", "negative_passages"]


_DUPLICATES = pa.table({"doc_id": ["d5"], "dup_of": ["d3"], "kind": ["near"], "similarity": pa.array([0.9], pa.float32())})


def test_group_ids_follow_the_texts_in_every_sentence_transformers_layout():
    table, _ = sentence_transformers_export(*_tables(), group_ids=True, duplicates=_DUPLICATES)
    assert table.column_names == ["anchor", "positive", "negative_1", "negative_2", "query_id", "pos_id", "neg_id_1", "neg_id_2", "positive_ids"]
    # d5, a near-duplicate of q2's positive d3, joins q2's group: a trainer masks it, here q2's own hard negative
    assert table.drop_columns(["anchor", "positive", "negative_1", "negative_2"]).to_pylist() == [
        {"query_id": "q2", "pos_id": "d3", "neg_id_1": "d5", "neg_id_2": "d1", "positive_ids": ["d3", "d5"]},
        {"query_id": "q1", "pos_id": "d1", "neg_id_1": "d3", "neg_id_2": "d4", "positive_ids": ["d1", "d2"]},
    ]
    assert table.select(["anchor", "positive", "negative_1", "negative_2"]).equals(sentence_transformers_export(*_tables())[0])
    triplet, _ = sentence_transformers_export(*_tables(), layout="triplet", group_ids=True)
    assert triplet.column_names == ["anchor", "positive", "negative", "query_id", "pos_id", "neg_id", "positive_ids"]
    assert [(r["query_id"], r["pos_id"], r["neg_id"]) for r in triplet.to_pylist()] == [
        ("q2", "d3", "d5"), ("q2", "d3", "d1"), ("q1", "d1", "d3"), ("q1", "d1", "d4"), ("q1", "d2", "d4"),
    ]
    pairs, _ = sentence_transformers_export(*_tables(), layout="labeled-pair", group_ids=True)
    assert pairs.column_names == ["anchor", "positive", "label", "query_id", "doc_id", "positive_ids"]
    assert pairs.column("doc_id").to_pylist() == ["d3", "d5", "d1", "d1", "d2", "d3", "d4"]


# ---- end to end on sample_data (bm25s candidates, simans) ----

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    result = invoke("mine", "--data", SAMPLE, "--out", run, "--strategy", "simans", "--source", "bm25", "--bm25-backend", "bm25s", "--json")
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_sentence_transformers_export_loads_with_datasets(run, tmp_path, suffix):
    import datasets

    out = tmp_path / f"st.{suffix}"
    result = invoke("export", "--run", run, "--strategy", "simans", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    loaded = datasets.load_dataset("parquet" if suffix == "parquet" else "json", data_files=str(out), split="train")
    assert loaded.column_names == ["anchor", "positive"] + [f"negative_{i}" for i in range(1, 8)]
    assert len(loaded) == stats["rows"] == stats["pairs"] - stats["pairs_dropped_short"]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("layout,loss_name", [("n-tuple", "MultipleNegativesRankingLoss"), ("triplet", "MultipleNegativesRankingLoss"), ("labeled-pair", "ContrastiveLoss")])
def test_sentence_transformer_trainer_takes_one_step_on_the_export(run, tmp_path, model_path, layout, loss_name):
    import datasets
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses

    out = tmp_path / "st.parquet"
    width = ["--num-negatives", 2] if layout == "n-tuple" else []
    assert invoke("export", "--run", run, "--strategy", "simans", "--layout", layout, *width, "--out", out).exit_code == 0
    dataset = datasets.load_dataset("parquet", data_files=str(out), split="train").select(range(4))
    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = 16
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "ckpt"), max_steps=1, per_device_train_batch_size=2, report_to="none", save_strategy="no", use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=getattr(losses, loss_name)(model))
    output = trainer.train()
    assert output.global_step == 1 and output.training_loss == output.training_loss  # a number, not NaN


def test_flagembedding_loader_reads_the_export(run, tmp_path, model_path):
    # a test dependency ([test]): an import error fails here rather than skipping the check
    from FlagEmbedding.abc.finetune.embedder import AbsEmbedderDataArguments, AbsEmbedderTrainDataset
    from transformers import AutoTokenizer

    out = tmp_path / "flag.jsonl"
    assert invoke("export", "--run", run, "--strategy", "simans", "--format", "flagembedding", "--out", out).exit_code == 0
    args = AbsEmbedderDataArguments(train_data=[str(out)], train_group_size=4)
    dataset = AbsEmbedderTrainDataset(args, AutoTokenizer.from_pretrained(model_path))
    assert len(dataset) == 60
    query, passages, teacher_scores = dataset[0]
    assert isinstance(query, str) and len(passages) == 4 and teacher_scores is None
    record = json.loads(out.read_text().splitlines()[0])  # the group ids ride along, ignored by the loader
    assert list(record) == ["query", "pos", "neg", "query_id", "pos_ids", "neg_ids", "positive_ids"]
    assert len(record["pos_ids"]) == len(record["pos"]) and len(record["neg_ids"]) == len(record["neg"])


def test_sentence_transformers_group_ids_on_request(run, tmp_path):
    import datasets

    out = tmp_path / "st.parquet"
    result = invoke("export", "--run", run, "--strategy", "simans", "--num-negatives", 2, "--group-ids", "--out", out, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["group_ids"] is True
    loaded = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert loaded.column_names == ["anchor", "positive", "negative_1", "negative_2", "query_id", "pos_id", "neg_id_1", "neg_id_2", "positive_ids"]
    for row in loaded:
        assert row["pos_id"] in row["positive_ids"] and not {row["neg_id_1"], row["neg_id_2"]} & set(row["positive_ids"])


def test_tevatron_export_has_the_documented_fields(run, tmp_path):
    # Tevatron's own loader is not installable here (PyPI has only tevatron 0.1.0, which reads pre-tokenized
    # ids); this checks the format its README documents for training data.
    out = tmp_path / "tev.jsonl"
    assert invoke("export", "--run", run, "--strategy", "simans", "--format", "tevatron", "--out", out).exit_code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    corpus_ids = set(pq.read_table(run / "corpus.parquet").column("doc_id").to_pylist())
    qrels = {(r["query_id"], r["doc_id"]) for r in pq.read_table(run / "qrels.parquet").to_pylist()}
    assert len(records) == 60
    for record in records:
        assert set(record) == {"query_id", "query", "positive_passages", "negative_passages", "positive_ids"}
        assert {p["docid"] for p in record["positive_passages"]} <= set(record["positive_ids"])
        for key in ("positive_passages", "negative_passages"):
            assert record[key] and all(set(p) == {"docid", "title", "text"} and p["docid"] in corpus_ids for p in record[key])
        assert all((record["query_id"], p["docid"]) in qrels for p in record["positive_passages"])
        assert not any((record["query_id"], p["docid"]) in qrels for p in record["negative_passages"])


def test_export_to_stdout_survives_a_closed_pipe(run):
    cmd = f"{sys.executable} -m negmine.cli export --run {run} --strategy simans --format tevatron --out - | head -n 2"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert [json.loads(line)["query_id"] for line in proc.stdout.splitlines()] == ["0", "2"][: len(proc.stdout.splitlines())]


def test_export_errors_name_the_fix(run, tmp_path):
    result = invoke("export", "--run", run, "--strategy", "topk", "--out", tmp_path / "x.jsonl")
    assert result.exit_code == 2
    assert f"{run}/negatives_topk.parquet: no negatives for strategy 'topk'; this run has ['simans']" in " ".join(result.stderr.split())
    result = invoke("export", "--run", run, "--strategy", "simans", "--format", "tevatron", "--out", tmp_path / "x.parquet")
    assert result.exit_code == 2 and "format 'tevatron' is JSONL only; name the file *.jsonl" in " ".join(result.stderr.split())
    result = invoke("export", "--run", run, "--strategy", "simans", "--format", "dpr", "--out", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "unknown export format 'dpr'; choose from ['flagembedding', 'sentence-transformers', 'tevatron']" in " ".join(result.stderr.split())
