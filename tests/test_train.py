"""Trainer: a tiny real training run on sample_data/ lowers the loss and saves a loadable model."""

import json

import numpy as np
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
    from negmine.train import training_examples

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


def test_tas_balanced_batches_come_from_one_cluster_without_repeated_queries():
    from negmine.train import _tas_balanced_sampler

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
