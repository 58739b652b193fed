"""Reciprocal Rank Fusion against its formula."""

import pyarrow as pa
import pytest

from negmine.retrieve.fusion import rrf_fuse
from negmine.schemas import CANDIDATES


def _run(source, ranked):
    rows = [("q", d, source, r, 1.0) for r, d in enumerate(ranked, start=1)]
    return pa.table({n: [row[i] for row in rows] for i, n in enumerate(CANDIDATES.names)}, schema=CANDIDATES)


def test_rrf_scores_ranks_and_sources():
    fused = rrf_fuse([_run("bm25", ["a", "b", "c"]), _run("dense", ["c", "d", "a"])]).to_pylist()
    score = {r["doc_id"]: r["score"] for r in fused}
    assert score["a"] == pytest.approx(1 / (60 + 1) + 1 / (60 + 3))
    assert score["c"] == pytest.approx(1 / (60 + 3) + 1 / (60 + 1))
    assert score["b"] == pytest.approx(1 / (60 + 2))
    assert score["d"] == pytest.approx(1 / (60 + 2))
    assert [r["doc_id"] for r in fused] == ["a", "c", "b", "d"]  # ties broken by doc id
    assert [r["rank"] for r in fused] == [1, 2, 3, 4]
    assert {r["doc_id"]: r["source"] for r in fused} == {"a": "bm25+dense", "b": "bm25", "c": "bm25+dense", "d": "dense"}


def test_rrf_k_is_a_parameter():
    fused = rrf_fuse([_run("bm25", ["a"])], k=0).to_pylist()
    assert fused[0]["score"] == pytest.approx(1 / (0 + 1))
