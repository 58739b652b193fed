"""Trainer: a tiny real training run on sample_data/ lowers the loss and saves a loadable model."""

import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from negmine.cli import app

from conftest import SAMPLE

runner = CliRunner()


@pytest.fixture(scope="module")
def bm25_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "run"
    result = runner.invoke(app, ["mine", "--data", str(SAMPLE), "--out", str(run), "--source", "bm25", "--bm25-backend", "bm25s", "--strategy", "topk", "--json"])
    assert result.exit_code == 0, result.output
    return run


def _epoch_means(history, steps_per_epoch):
    losses = [h["loss"] for h in history if "loss" in h]
    return np.mean(losses[:steps_per_epoch]), np.mean(losses[-steps_per_epoch:])


def test_mnrl_with_hard_negatives_lowers_the_loss_and_saves_a_model(bm25_run, model_path):
    args = ["train", "--run", bm25_run, "--model", model_path, "--name", "mnrl", "--strategy", "topk", "--num-negatives", 1,
            "--epochs", 2, "--batch-size", 8, "--lr", 1e-4, "--max-seq-length", 32, "--json"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    history = json.loads((bm25_run / "models" / "mnrl" / "log_history.json").read_text())
    first, last = _epoch_means(history, 9)  # 70 (query, positive) pairs / batch 8 = 9 steps per epoch
    assert last < first
    # collision masking is on by default: 17 sample documents are positives of several queries
    entry = json.loads((bm25_run / "manifest.json").read_text())["stages"]["train.mnrl"]
    assert entry["stats"]["masked_in_batch"] == history[-1]["masked_in_batch"] > 0
    assert not {"mask_collisions", "fn_source", "mask_fn_above"} & set(entry["config"])
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bm25_run / "models" / "mnrl" / "final"))
    emb = model.encode(["a claim about cells"], normalize_embeddings=True)
    assert emb.shape == (1, 384) and np.isclose(np.linalg.norm(emb), 1.0, atol=1e-3)
    rerun = runner.invoke(app, [str(a) for a in args])
    assert json.loads(rerun.stdout)["train.mnrl"]["skipped"] is True


def test_adore_trains_the_query_encoder_against_fixed_documents(bm25_run, model_path):
    args = ["train", "--run", bm25_run, "--model", model_path, "--name", "adore", "--method", "adore", "--adore-k", 20,
            "--epochs", 2, "--batch-size", 16, "--lr", 1e-4, "--max-seq-length", 32, "--json"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    history = json.loads((bm25_run / "models" / "adore" / "log_history.json").read_text())
    first, last = _epoch_means(history, 4)  # 60 queries / batch 16 = 4 steps per epoch
    assert last < first
    assert (bm25_run / "models" / "adore" / "doc_embeddings.npy").exists()


def test_training_examples_pad_with_random_non_positives():
    import pyarrow as pa

    from negmine.schemas import CORPUS, NEGATIVES, QRELS, QUERIES
    from negmine.train.trainer import training_examples

    corpus = pa.table({"doc_id": ["p", "n1", "r1", "r2", "r3"], "title": [None] * 5, "text": ["P", "N1", "R1", "R2", "R3"]}, schema=CORPUS)
    queries = pa.table({"query_id": ["q"], "text": ["Q"]}, schema=QUERIES)
    qrels = pa.table({"query_id": ["q"], "doc_id": ["p"], "relevance": [1]}, schema=QRELS)
    negatives = pa.table({"query_id": ["q"], "pos_id": ["p"], "neg_id": ["n1"], "neg_rank": [1], "strategy": ["topk"]}).append_column(
        "retriever_score", pa.nulls(1, pa.float32())
    )
    negatives = negatives.append_column("pos_retriever_score", pa.nulls(1, pa.float32()))
    for name in ("ce_score", "pos_ce_score"):
        negatives = negatives.append_column(name, pa.nulls(1, pa.float32()))
    negatives = negatives.append_column("source_rank", pa.array([1], pa.int32())).append_column("cluster_id", pa.nulls(1, pa.int32()))
    negatives = negatives.select([f.name for f in NEGATIVES if f.name in negatives.column_names])
    examples = training_examples(negatives, queries, corpus, qrels, num_negatives=2, random_negatives=1, seed=0)
    assert examples["anchor"] == ["Q"] and examples["positive"] == ["P"]
    assert examples["negative_1"] == ["N1"]
    padded = {examples["negative_2"][0], examples["negative_3"][0]}
    assert len(padded) == 2 and padded <= {"R1", "R2", "R3"}
    assert examples["query_id"] == ["q"] and examples["pos_id"] == ["p"] and examples["neg_id_1"] == ["n1"]
    assert [examples[f"neg_id_{k}"][0].upper() for k in (2, 3)] == [examples[f"negative_{k}"][0] for k in (2, 3)]


# ---- collision masking ----

def _tiny_run(path):
    """Two queries; q1's positive d1 has a duplicate d5, and the fn model thinks d6 a positive of q2."""
    from negmine.io import write_table
    from negmine.rundir import Run
    from negmine.schemas import CORPUS, DUPLICATES, FN_SCORES, NEGATIVES, QRELS, QUERIES

    run = Run.open(path)
    docs = [f"d{i}" for i in range(1, 7)]
    write_table(pa.table({"doc_id": docs, "title": [None] * 6, "text": [d.upper() for d in docs]}), path / "corpus.parquet", CORPUS)
    write_table(pa.table({"query_id": ["q1", "q2"], "text": ["Q1", "Q2"]}), path / "queries.parquet", QUERIES)
    write_table(pa.table({"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"], "relevance": [1, 1]}), path / "qrels.parquet", QRELS)
    negatives = {"query_id": ["q1", "q2"], "pos_id": ["d1", "d2"], "neg_id": ["d3", "d4"], "neg_rank": [1, 1], "strategy": ["topk"] * 2}
    write_table(pa.table(negatives | {f.name: pa.nulls(2, f.type) for f in NEGATIVES if f.name not in negatives}), path / "negatives_topk.parquet", NEGATIVES)
    write_table(pa.table({"doc_id": ["d5"], "dup_of": ["d1"], "kind": ["exact"], "similarity": [1.0]}), path / "duplicates.parquet", DUPLICATES)
    write_table(pa.table({"query_id": ["q2", "q1"], "doc_id": ["d6", "d4"], "source_rank": [2, 1], "fn_prob": [0.9, 0.3]}), path / "fn_scores_dense.parquet", FN_SCORES)
    return run


def test_train_stage_masks_labelled_duplicate_and_likely_positives(tmp_path, monkeypatch):
    from negmine.train import trainer as train
    from negmine.runners.train import train_stage

    seen = []

    def trainer_stub(model, examples, out_dir, *args, groups=None, **kwargs):
        seen.append(groups)
        (out_dir / "final").mkdir(parents=True, exist_ok=True)
        (out_dir / "final" / "weights").write_text("stub")
        return None, [{"loss": 1.0, "step": 1}] + ([{"masked_in_batch": 5, "step": 1}] if groups is not None else [])

    monkeypatch.setattr(train, "train_bi_encoder", trainer_stub)
    run = _tiny_run(tmp_path / "run")
    result = train_stage(run, "m", "stub-model", strategy="topk")
    assert seen[-1] == {"q1": {"d1", "d5"}, "q2": {"d2", "d6"}}
    assert result.entry["stats"]["masked_in_batch"] == 5
    assert {"duplicates.parquet", "fn_scores_dense.parquet"} <= set(result.entry["inputs"])
    assert not {"mask_collisions", "fn_source", "mask_fn_above"} & set(result.entry["config"])  # defaults: older runs stay fresh
    assert train_stage(run, "m", "stub-model", strategy="topk").skipped

    result = train_stage(run, "m", "stub-model", strategy="topk", mask_fn_above=0.95)
    assert not result.skipped and result.entry["config"]["mask_fn_above"] == 0.95
    assert seen[-1] == {"q1": {"d1", "d5"}, "q2": {"d2"}}

    result = train_stage(run, "m", "stub-model", strategy="topk", mask_collisions=False)
    assert seen[-1] is None and result.entry["config"]["mask_collisions"] is False
    assert result.entry["stats"]["masked_in_batch"] == 0
    assert not {"duplicates.parquet", "fn_scores_dense.parquet"} & set(result.entry["inputs"])

    (run.path / "duplicates.parquet").unlink()
    (run.path / "fn_scores_dense.parquet").unlink()
    result = train_stage(run, "m", "stub-model", strategy="topk")
    assert seen[-1] == {"q1": {"d1"}, "q2": {"d2"}}  # without the optional tables the labelled positives are still masked


def test_cached_mnrl_trains_with_the_mask(tmp_path, model_path):
    from negmine.train.collisions import collision_mask
    from negmine.train.trainer import train_bi_encoder

    examples = {
        "query_id": ["q0", "q1", "q2", "q3"],
        "anchor": ["what purrs", "what barks", "what sings", "what swims"],
        "positive": ["cats purr", "dogs bark", "birds sing", "fish swim"],
        "negative_1": ["cows moo", "kittens purr softly", "owls hoot", "frogs croak"],
        "pos_id": ["c", "d", "b", "f"],
        "neg_id_1": ["m", "k", "o", "r"],
    }
    groups = {"q0": {"c", "k"}, "q1": {"d"}, "q2": {"b", "o"}, "q3": {"f", "b"}}  # k: a second cat document
    expected = collision_mask(examples["query_id"], [examples["pos_id"], examples["neg_id_1"]], groups).sum()
    assert expected == 3  # q0 ← k; q2 ← o (its own hard negative, a known positive); q3 ← b
    _, history = train_bi_encoder(model_path, examples, tmp_path, "cached-mnrl", batch_size=4, max_seq_length=16, mini_batch_size=2, groups=groups)
    assert history[-1] == {"masked_in_batch": expected, "step": 1}
    assert all(h["loss"] == h["loss"] for h in history if "loss" in h)  # finite: no row is all masked


def test_tas_balanced_batches_come_from_one_cluster_without_repeated_queries():
    from negmine.train.trainer import _tas_balanced_sampler

    clusters = [0, 0, 0, 1, 1, 1, 1, 2]
    anchors = ["a", "a", "b", "c", "d", "e", "f", "g"]  # query "a" has two positives
    sampler = _tas_balanced_sampler(clusters, anchors)(list(range(8)), batch_size=2, drop_last=False, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for batch in batches:
        assert len({clusters[i] for i in batch}) == 1
        assert len({anchors[i] for i in batch}) == len(batch)
    assert len(sampler) == len(batches)
    assert batches == list(_tas_balanced_sampler(clusters, anchors)(list(range(8)), batch_size=2, drop_last=False, seed=3))
