"""negmine export: pure exporters on hand-written tables, and each file loaded by the library that consumes it."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negmine.errors import BadInputError
from negmine.export import flagembedding_export, sentence_transformers_export, tevatron_corpus, tevatron_export
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
    assert str(info.value) == "--layout: unknown sentence-transformers layout 'pairs'; choose from ['labeled-list', 'labeled-pair', 'n-tuple', 'triplet']"


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


# s(q, d) of every pair the hand-written tables can export
_SCORES = {("q1", "d1"): 0.9, ("q1", "d2"): 0.8, ("q1", "d3"): 0.3, ("q1", "d4"): 0.2, ("q2", "d3"): 0.7, ("q2", "d5"): 0.4, ("q2", "d1"): 0.1}


def test_labeled_list_is_one_row_per_pair_positive_first():
    table, stats = sentence_transformers_export(*_tables(), layout="labeled-list")
    assert table.column_names == ["anchor", "positive", "labels"]
    assert table.to_pylist() == [
        {"anchor": "second", "positive": ["three", "five", "T1 one"], "labels": [1, 0, 0]},
        {"anchor": "first", "positive": ["T1 one", "three", "T4 four"], "labels": [1, 0, 0]},
        {"anchor": "first", "positive": ["two", "T4 four"], "labels": [1, 0]},
    ]
    assert stats["rows"] == stats["pairs"] == 3
    capped, _ = sentence_transformers_export(*_tables(), layout="labeled-list", num_negatives=1, group_ids=True)
    assert capped.column_names == ["anchor", "positive", "labels", "query_id", "doc_ids", "positive_ids"]
    assert capped.column("doc_ids").to_pylist() == [["d3", "d5"], ["d1", "d3"], ["d2", "d4"]]


def test_sentence_transformers_scores_follow_mine_hard_negatives_output_scores():
    # n-tuple and triplet: scores = [s(q, positive), s(q, negative_1), ...], from which MarginMSELoss takes the margins
    table, _ = sentence_transformers_export(*_tables(), scores=_SCORES)
    assert table.column_names == ["anchor", "positive", "negative_1", "negative_2", "scores"]
    assert table.column("scores").to_pylist() == [[0.7, 0.4, 0.1], [0.9, 0.3, 0.2]]
    assert table.drop_columns(["scores"]).equals(sentence_transformers_export(*_tables())[0])
    triplet, _ = sentence_transformers_export(*_tables(), layout="triplet", scores=_SCORES)
    assert triplet.column_names == ["anchor", "positive", "negative", "scores"]
    assert triplet.column("scores").to_pylist() == [[0.7, 0.4], [0.7, 0.1], [0.9, 0.3], [0.9, 0.2], [0.8, 0.2]]
    # labeled-pair and labeled-list: the score takes the place of the label
    pairs, _ = sentence_transformers_export(*_tables(), layout="labeled-pair", scores=_SCORES)
    assert pairs.column_names == ["anchor", "positive", "score"]
    assert pairs.column("score").to_pylist() == [0.7, 0.4, 0.1, 0.9, 0.8, 0.3, 0.2]
    listed, _ = sentence_transformers_export(*_tables(), layout="labeled-list", scores=_SCORES, group_ids=True)
    assert listed.column_names == ["anchor", "positive", "scores", "query_id", "doc_ids", "positive_ids"]
    assert listed.column("scores").to_pylist() == [[0.7, 0.4, 0.1], [0.9, 0.3, 0.2], [0.8, 0.2]]


def test_flagembedding_and_tevatron_scores():
    flag, _ = flagembedding_export(*_tables(), scores=_SCORES)
    assert flag.to_pylist()[1] == {
        "query": "first", "pos": ["T1 one", "two"], "neg": ["three", "T4 four"], "pos_scores": [0.9, 0.8], "neg_scores": [0.3, 0.2],
        "query_id": "q1", "pos_ids": ["d1", "d2"], "neg_ids": ["d3", "d4"], "positive_ids": ["d1", "d2"],
    }
    assert flagembedding_export(*_tables(), scores=_SCORES, group_ids=False)[0].column_names == ["query", "pos", "neg", "pos_scores", "neg_scores"]
    tev, _ = tevatron_export(*_tables(), scores=_SCORES)
    assert tev.to_pylist()[0] == {
        "query_id": "q2",
        "query": "second",
        "positive_passages": [{"docid": "d3", "title": "", "text": "three", "score": 0.7}],
        "negative_passages": [{"docid": "d5", "title": "", "text": "five", "score": 0.4}, {"docid": "d1", "title": "T1", "text": "one", "score": 0.1}],
        "positive_ids": ["d3"],
    }


def test_tevatron_ids_layout_and_its_corpus():
    tev, stats = tevatron_export(*_tables(), layout="ids")
    assert tev.to_pylist() == [
        {"query_id": "q2", "query_text": "second", "positive_document_ids": ["d3"], "negative_document_ids": ["d5", "d1"], "positive_ids": ["d3"]},
        {"query_id": "q1", "query_text": "first", "positive_document_ids": ["d1", "d2"], "negative_document_ids": ["d3", "d4"], "positive_ids": ["d1", "d2"]},
    ]
    assert stats == {"layout": "ids", "rows": 2, "queries": 2}
    corpus = _tables()[2]
    assert tevatron_corpus(tev, corpus).to_pylist() == [
        {"docid": "d1", "title": "T1", "text": "one"}, {"docid": "d2", "title": "", "text": "two"}, {"docid": "d3", "title": "", "text": "three"},
        {"docid": "d4", "title": "T4", "text": "four"}, {"docid": "d5", "title": "", "text": "five"},
    ]
    only_q2 = tevatron_export(_tables()[0].filter(pa.compute.equal(_tables()[0].column("query_id"), "q2")), *_tables()[1:], layout="ids")[0]
    assert tevatron_corpus(only_q2, corpus).column("docid").to_pylist() == ["d1", "d3", "d5"]  # the documents it names, in corpus order
    with pytest.raises(BadInputError, match="ids layout reads its distillation scores from the corpus"):
        tevatron_export(*_tables(), layout="ids", scores=_SCORES)


def test_a_pair_without_a_score_is_bad_input_naming_it():
    partial = {k: v for k, v in _SCORES.items() if k != ("q2", "d1")}
    for exporter, options in [(sentence_transformers_export, {"layout": "triplet"}), (flagembedding_export, {}), (tevatron_export, {})]:
        with pytest.raises(BadInputError) as info:
            exporter(*_tables(), scores=partial, **options)
        assert str(info.value).startswith("--scores: 1 (query, document) pairs of the export have no score, the first: query 'q2', document 'd1'")
    # an n-tuple one negative wide leaves q2's second negative d1 out, so it needs no score for it
    assert sentence_transformers_export(*_tables(), num_negatives=1, scores=partial)[0].num_rows == 3


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


# ---- scores on sample_data: the run above, rescored by a bi-encoder teacher (the MiniLM weights) ----

@pytest.fixture(scope="module")
def scored_run(run, model_path):
    import shutil

    scored = run.parent / "scored"
    shutil.copytree(run, scored)
    result = invoke("rescore", "--run", scored, "--source", "bm25", "--teacher", f"bi-encoder:{model_path}", "--max-length", 64, "--json")
    assert result.exit_code == 0, result.output
    return scored


def _table_scores(run, kind):
    """(query_id, doc_id) → the float32 score of the run's tables that --scores ``kind`` reads."""
    if kind == "teacher":
        parts = [pq.read_table(run / f"scored_{t}_bm25.parquet") for t in ("candidates", "positives")]
        return {(q, d): s for t in parts for q, d, s in zip(*(t.column(c).to_pylist() for c in ("query_id", "doc_id", "ce_score")))}
    negatives = pq.read_table(run / "negatives_simans.parquet")
    positives = pq.read_table(run / "positive_scores_bm25.parquet")
    found = {(q, d): s for q, d, s in zip(*(positives.column(c).to_pylist() for c in ("query_id", "doc_id", "score")))}
    return found | {(q, d): s for q, d, s in zip(*(negatives.column(c).to_pylist() for c in ("query_id", "neg_id", "retriever_score")))}


def _float32(values):
    import numpy as np

    return np.asarray(values, dtype=np.float32).tolist()


@pytest.mark.parametrize("kind", ["teacher", "retriever"])
def test_scored_n_tuple_loads_with_datasets_and_holds_the_runs_scores(scored_run, tmp_path, kind):
    import datasets

    out = tmp_path / "st.parquet"
    result = invoke("export", "--run", scored_run, "--scores", kind, "-n", 3, "--group-ids", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["scores"] == kind and stats["score_source"] == "bm25"
    loaded = datasets.Dataset.from_parquet(str(out))
    assert loaded.column_names[:6] == ["anchor", "positive", "negative_1", "negative_2", "negative_3", "scores"]
    assert len(loaded) == stats["rows"] > 0
    expected = _table_scores(scored_run, kind)
    for row in loaded:
        docs = [row["pos_id"], row["neg_id_1"], row["neg_id_2"], row["neg_id_3"]]
        assert _float32(row["scores"]) == _float32([expected[(row["query_id"], d)] for d in docs])
    if kind == "teacher":  # the teacher's scores, not the retriever's
        assert loaded[0]["scores"] != datasets.Dataset.from_parquet(str(_export(scored_run, tmp_path / "r.parquet", "--scores", "retriever", "-n", 3)))[0]["scores"]


def _export(run, out, *args):
    result = invoke("export", "--run", run, *args, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("layout,label", [("labeled-pair", "score"), ("labeled-list", "scores")])
def test_scored_labeled_layouts_load_with_datasets(scored_run, tmp_path, layout, label):
    import datasets

    loaded = datasets.load_dataset("json", data_files=str(_export(scored_run, tmp_path / "st.jsonl", "--layout", layout, "--scores", "teacher")), split="train")
    assert loaded.column_names == ["anchor", "positive", label]
    if layout == "labeled-list":
        assert all(len(row["positive"]) == len(row["scores"]) >= 2 for row in loaded)
        unscored = datasets.load_dataset("json", data_files=str(_export(scored_run, tmp_path / "u.jsonl", "--layout", layout)), split="train")
        assert unscored.column_names == ["anchor", "positive", "labels"] and unscored[0]["labels"][:2] == [1, 0]
        assert unscored["positive"] == loaded["positive"]


def test_sentence_transformer_trainer_takes_a_margin_mse_step_on_the_scored_n_tuple(scored_run, tmp_path, model_path):
    import datasets
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss

    out = _export(scored_run, tmp_path / "st.parquet", "--scores", "teacher", "-n", 2)
    dataset = datasets.load_dataset("parquet", data_files=str(out), split="train").select(range(4))
    assert dataset.column_names == ["anchor", "positive", "negative_1", "negative_2", "scores"]
    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = 16
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "ckpt"), max_steps=1, per_device_train_batch_size=2, report_to="none", save_strategy="no", use_cpu=True)
    output = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=MarginMSELoss(model)).train()
    assert output.global_step == 1 and output.training_loss == output.training_loss  # a number, not NaN


def test_flagembedding_distillation_reads_the_scored_export(run, scored_run, tmp_path, model_path):
    from FlagEmbedding.abc.finetune.embedder import AbsEmbedderDataArguments, AbsEmbedderTrainDataset
    from transformers import AutoTokenizer

    out = _export(scored_run, tmp_path / "flag.jsonl", "--format", "flagembedding", "--scores", "teacher")
    record = json.loads(out.read_text().splitlines()[0])
    assert list(record) == ["query", "pos", "neg", "pos_scores", "neg_scores", "query_id", "pos_ids", "neg_ids", "positive_ids"]
    expected = _table_scores(scored_run, "teacher")
    assert _float32(record["pos_scores"] + record["neg_scores"]) == _float32([expected[(record["query_id"], d)] for d in record["pos_ids"] + record["neg_ids"]])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset = AbsEmbedderTrainDataset(AbsEmbedderDataArguments(train_data=[str(out)], train_group_size=4, knowledge_distillation=True), tokenizer)
    assert len(dataset) == 60
    query, passages, teacher_scores = dataset[0]
    score_of = dict(zip(record["pos"] + record["neg"], record["pos_scores"] + record["neg_scores"]))
    assert query == record["query"] and len(passages) == 4 and teacher_scores == [score_of[p] for p in passages]
    # the unscored export is refused for distillation, as FlagEmbedding documents
    plain = _export(run, tmp_path / "plain.jsonl", "--format", "flagembedding")
    with pytest.raises(ValueError, match="pos_scores"):
        AbsEmbedderTrainDataset(AbsEmbedderDataArguments(train_data=[str(plain)], train_group_size=4, knowledge_distillation=True), tokenizer)


def test_tevatron_scored_passages_and_ids_layout_load_with_datasets(scored_run, tmp_path):
    # Tevatron itself is not installable here (see test_tevatron_export_has_the_documented_fields): this loads the files as its
    # TrainDataset / DistilTrainDataset do (datasets' json loader) and checks the fields they read.
    import datasets

    scored = datasets.load_dataset("json", data_files=str(_export(scored_run, tmp_path / "tev.jsonl", "--format", "tevatron", "--scores", "teacher")), split="train")
    assert scored.column_names == ["query_id", "query", "positive_passages", "negative_passages", "positive_ids"] and len(scored) == 60
    expected = _table_scores(scored_run, "teacher")
    for row in scored:
        for passage in row["positive_passages"] + row["negative_passages"]:
            assert set(passage) == {"docid", "title", "text", "score"}
            assert _float32([passage["score"]]) == _float32([expected[(row["query_id"], passage["docid"])]])
    out = tmp_path / "ids.jsonl"
    result = invoke("export", "--run", scored_run, "--format", "tevatron", "--layout", "ids", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["corpus_out"] == str(tmp_path / "ids.corpus.jsonl")
    train = datasets.load_dataset("json", data_files=str(out), split="train")
    corpus = datasets.load_dataset("json", data_files=str(tmp_path / "ids.corpus.jsonl"), split="train")
    assert train.column_names == ["query_id", "query_text", "positive_document_ids", "negative_document_ids", "positive_ids"]
    assert corpus.column_names == ["docid", "title", "text"]
    docid_to_index = {d: i for i, d in enumerate(corpus["docid"])}  # as Tevatron's TrainDataset maps them
    for row, passages in zip(train, scored):
        assert [corpus[docid_to_index[d]]["text"] for d in row["negative_document_ids"]] == [p["text"] for p in passages["negative_passages"]]


def test_scores_errors_name_the_fix(run, scored_run, tmp_path):
    out = tmp_path / "x.jsonl"
    result = invoke("export", "--run", run, "--scores", "teacher", "--out", out)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and not out.exists()
    assert f"{run}/scored_candidates_bm25.parquet: missing" in message
    assert f"negmine rescore --run {run} --source bm25 --teacher MODEL" in message
    for args, says in [
        (["--scores", "oracle"], "unknown score source 'oracle'; choose from ['retriever', 'teacher']"),
        (["--format", "flagembedding", "--layout", "n-tuple"], "format 'flagembedding' has no layout 'n-tuple'"),
        (["--format", "tevatron", "--layout", "n-tuple"], "format 'tevatron' has no layout 'n-tuple'"),
        (["--format", "tevatron", "--layout", "ids", "--scores", "teacher"], "ids layout reads its distillation scores from the corpus"),
        (["--format", "tevatron", "-n", "2"], "--num-negatives: applies to --format sentence-transformers only"),
        (["--scores", "teacher", "--source", "dense"], "scored_candidates_dense.parquet: missing"),
    ]:
        result = invoke("export", "--run", scored_run, *args, "--out", out)
        assert result.exit_code == 2 and says in " ".join(result.stderr.split()), (args, result.output)
        assert not out.exists() and not (tmp_path / "x.corpus.jsonl").exists()
    result = invoke("export", "--run", scored_run, "--format", "tevatron", "--layout", "ids", "--out", "-")
    assert result.exit_code == 2 and "give --out a file" in " ".join(result.stderr.split())
