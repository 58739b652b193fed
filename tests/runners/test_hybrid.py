"""Hybrid pools: bm25 and dense candidates fused (RRF / union), positives' fused scores, mine --source hybrid."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from negmine.cli import app
from negmine.errors import BadInputError, StageError
from negmine.retrieve.fusion import fuse_positive_scores, rrf_fuse, union_fuse
from negmine.io import write_table
from negmine.rundir import Run
from negmine.schemas import CANDIDATES, POSITIVE_SCORES, QRELS, QUERIES
from negmine.runners.hybrid import hybrid_stage
from negmine.runners.sample import sample_stage

from conftest import SAMPLE

runner = CliRunner()


def _candidates(source, ranked, query="q"):
    return pa.table(
        {"query_id": [query] * len(ranked), "doc_id": ranked, "source": [source] * len(ranked), "rank": list(range(1, len(ranked) + 1)), "score": [1.0] * len(ranked)},
        schema=CANDIDATES,
    )


def _positives(source, rows):
    """rows: (doc_id, rank or None, score) of query q's positives."""
    return pa.table(
        {"query_id": ["q"] * len(rows), "doc_id": [r[0] for r in rows], "source": [source] * len(rows), "rank": [r[1] for r in rows], "score": [r[2] for r in rows]},
        schema=POSITIVE_SCORES,
    )


# bm25 returns x, a, y, z; dense returns w, y, a, z. Labelled positives: a (both), w (dense only), p (neither).
BM25 = _candidates("bm25", ["x", "a", "y", "z"])
DENSE = _candidates("dense", ["w", "y", "a", "z"])
POS_BM25 = _positives("bm25", [("a", 2, 11.0), ("w", None, 3.0), ("p", None, 1.0)])
POS_DENSE = _positives("dense", [("a", 3, 0.8), ("w", 1, 0.9), ("p", None, 0.1)])


def _run_with_pools(tmp_path):
    run = Run.open(tmp_path / "run")
    for name, table, schema in (
        ("candidates_bm25", BM25, CANDIDATES), ("positive_scores_bm25", POS_BM25, POSITIVE_SCORES),
        ("candidates_dense", DENSE, CANDIDATES), ("positive_scores_dense", POS_DENSE, POSITIVE_SCORES),
    ):
        write_table(table, run.file(f"{name}.parquet"), schema)
    write_table(pa.table({"query_id": ["q"] * 3, "doc_id": ["a", "w", "p"], "relevance": [1] * 3}, schema=QRELS), run.file("qrels.parquet"), QRELS)
    write_table(pa.table({"query_id": ["q"], "text": ["a query"]}, schema=QUERIES), run.file("queries.parquet"), QUERIES)
    return run


def test_rrf_hybrid_stage_scores_ranks_and_sources(tmp_path):
    run = _run_with_pools(tmp_path)
    result = hybrid_stage(run)
    fused = pq.read_table(run.file("candidates_hybrid.parquet")).to_pylist()
    score = {r["doc_id"]: r["score"] for r in fused}
    assert score["y"] == pytest.approx(1 / (60 + 3) + 1 / (60 + 2))
    assert score["a"] == pytest.approx(1 / (60 + 2) + 1 / (60 + 3))
    assert score["z"] == pytest.approx(1 / (60 + 4) + 1 / (60 + 4))
    assert score["x"] == pytest.approx(1 / (60 + 1))
    assert score["w"] == pytest.approx(1 / (60 + 1))
    assert [r["doc_id"] for r in fused] == ["a", "y", "z", "w", "x"]  # a and y tie: doc id
    assert [r["rank"] for r in fused] == [1, 2, 3, 4, 5]
    assert {r["doc_id"]: r["source"] for r in fused} == {"a": "bm25+dense", "y": "bm25+dense", "z": "bm25+dense", "w": "dense", "x": "bm25"}
    stats = result.entry["stats"]
    assert stats["candidates_by_source"] == {"bm25": 1, "bm25+dense": 3, "dense": 1}
    assert stats["positives_retrieved"] == 2 and stats["recall"] == pytest.approx(round(2 / 3, 4))
    assert hybrid_stage(run).skipped


def test_positive_scores_are_the_fused_score_zero_and_null_rank_when_unretrieved(tmp_path):
    run = _run_with_pools(tmp_path)
    hybrid_stage(run)
    positives = {r["doc_id"]: r for r in pq.read_table(run.file("positive_scores_hybrid.parquet")).to_pylist()}
    assert [r["doc_id"] for r in pq.read_table(run.file("positive_scores_hybrid.parquet")).to_pylist()] == ["a", "w", "p"]
    assert positives["a"]["score"] == pytest.approx(1 / (60 + 2) + 1 / (60 + 3))
    assert (positives["a"]["rank"], positives["a"]["source"]) == (1, "bm25+dense")
    assert positives["w"]["score"] == pytest.approx(1 / (60 + 1))  # bm25 missed it: only dense's term
    assert (positives["w"]["rank"], positives["w"]["source"]) == (4, "dense")
    assert (positives["p"]["score"], positives["p"]["rank"], positives["p"]["source"]) == (0.0, None, "")


def test_union_ranks_by_best_rank_then_rrf():
    fused = union_fuse([BM25, DENSE]).to_pylist()
    # best ranks: x 1, w 1, a 2, y 2, z 4; x/w tie in RRF too (1/61): doc id; a/y tie in RRF (1/62 + 1/63): doc id
    assert [r["doc_id"] for r in fused] == ["w", "x", "a", "y", "z"]
    assert {r["doc_id"]: r["score"] for r in fused} == pytest.approx({r["doc_id"]: r["score"] for r in rrf_fuse([BM25, DENSE]).to_pylist()})
    bm25 = _candidates("bm25", ["x", "b", "c"])
    dense = _candidates("dense", ["c", "d", "b"])
    # best rank 1: x (1/61) and c (1/61 + 1/63): the RRF score breaks the tie; then b (rank 2, 1/62 + 1/63) before d (1/62)
    assert [r["doc_id"] for r in union_fuse([bm25, dense]).to_pylist()] == ["c", "x", "b", "d"]
    assert [r["doc_id"] for r in rrf_fuse([bm25, dense]).to_pylist()] == ["c", "b", "x", "d"]


def test_union_positive_ranks_follow_the_union_order():
    fused = union_fuse([BM25, DENSE])
    positives = {r["doc_id"]: r["rank"] for r in fuse_positive_scores([POS_BM25, POS_DENSE], fused).to_pylist()}
    assert positives == {"w": 1, "a": 3, "p": None}


def test_hybrid_stage_union_and_errors(tmp_path):
    run = _run_with_pools(tmp_path)
    hybrid_stage(run, fusion="union")
    assert pq.read_table(run.file("candidates_hybrid.parquet")).column("doc_id").to_pylist() == ["w", "x", "a", "y", "z"]
    with pytest.raises(BadInputError, match=r"^--fusion: unknown value 'max'; choose from \['rrf', 'union'\]$"):
        hybrid_stage(run, fusion="max")
    run.file("candidates_dense.parquet").unlink()
    with pytest.raises(StageError) as info:
        hybrid_stage(run, force=True)
    assert str(info.value) == f"{run.file('candidates_dense.parquet')}: missing; the hybrid pool fuses bm25 and dense, run `negmine dense --run {run.path}` first"


def test_sample_from_the_hybrid_pool(tmp_path):
    run = _run_with_pools(tmp_path)
    hybrid_stage(run)
    sample_stage(run, "topk", "hybrid", num_negatives=2, dedup=False)  # tables only: no corpus to compare texts in
    rows = pq.read_table(run.file("negatives_topk.parquet")).to_pylist()
    # positives a, w, p are never negatives: y, z are the best two left; scores are RRF scores
    assert {(r["pos_id"], r["neg_id"]) for r in rows} == {(p, n) for p in ("a", "w", "p") for n in ("y", "z")}
    by_pos = {(r["pos_id"], r["neg_id"]): (r["retriever_score"], r["pos_retriever_score"], r["source_rank"]) for r in rows}
    assert by_pos[("p", "y")] == pytest.approx((1 / 62 + 1 / 63, 0.0, 2))
    assert by_pos[("w", "z")] == pytest.approx((2 / 64, 1 / 61, 3))


def test_mine_source_hybrid_on_sample_data(tmp_path, model_path):
    run = tmp_path / "hybrid"
    args = ["mine", "--data", SAMPLE, "--out", run, "--source", "hybrid", "--strategy", "topk", "--bm25-backend", "bm25s",
            "--model", model_path, "--max-seq-length", 32, "--k", 20, "--json"]
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {"ingest", "bm25", "embed", "dense", "hybrid", "duplicates", "sample.topk"}
    fused = pq.read_table(run / "candidates_hybrid.parquet").to_pylist()
    assert {r["source"] for r in fused} <= {"bm25", "dense", "bm25+dense"}
    ranks = {}
    for name in ("bm25", "dense"):
        for r in pq.read_table(run / f"candidates_{name}.parquet").to_pylist():
            ranks.setdefault((r["query_id"], r["doc_id"]), {})[name] = r["rank"]
    assert len(fused) == len(ranks)  # the union: every document either retriever returned
    for r in fused:
        found = ranks[(r["query_id"], r["doc_id"])]
        assert r["source"] == "+".join(sorted(found))
        assert r["score"] == pytest.approx(sum(1 / (60 + rank) for rank in found.values()), rel=1e-6)
    assert summary["hybrid"]["stats"]["candidates"] == len(fused)
    negatives = pq.read_table(run / "negatives_topk.parquet").to_pylist()
    qrels = {(r["query_id"], r["doc_id"]) for r in pq.read_table(run / "qrels.parquet").to_pylist()}
    assert negatives and not any((r["query_id"], r["neg_id"]) in qrels for r in negatives)
    # a second run with another fusion reruns only hybrid and sample
    result = runner.invoke(app, [str(a) for a in args + ["--fusion", "union"]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {stage: entry["skipped"] for stage, entry in json.loads(result.stdout).items()} == {
        "ingest": True, "bm25": True, "embed": True, "dense": True, "hybrid": False, "duplicates": True, "sample.topk": False,
    }
