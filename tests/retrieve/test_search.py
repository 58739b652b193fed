"""Approximate faiss indexes (--index ivf|hnsw): deterministic, recall against flat reported and checked."""

import json
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from negmine.cli import app
from negmine.retrieve.search import build_index, recall_against_flat, top_k
from negmine.errors import StageError

from conftest import SAMPLE

runner = CliRunner()


def _unit(rows, dim=32, seed=0):
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivf_probing_every_cell_is_exact_and_fewer_cells_lose_recall():
    docs, queries = _unit(3000), _unit(200, seed=1)
    exact = top_k(build_index(docs, "flat"), queries, 10)
    every_cell = build_index(docs, "ivf", nlist=50, nprobe=50)
    assert np.array_equal(top_k(every_cell, queries, 10)[1], exact[1])
    assert recall_against_flat(every_cell, docs, queries, 10) == 1.0
    one_cell = build_index(docs, "ivf", nlist=50, nprobe=1)
    assert recall_against_flat(one_cell, docs, queries, 10) < 0.9  # random vectors: one cell of 50 misses most


def test_hnsw_recall_and_determinism():
    docs, queries = _unit(3000), _unit(200, seed=1)
    first = build_index(docs, "hnsw", hnsw_m=16, ef_search=256)
    assert recall_against_flat(first, docs, queries, 10) > 0.9
    again = build_index(docs, "hnsw", hnsw_m=16, ef_search=256)
    assert np.array_equal(top_k(first, queries, 10)[1], top_k(again, queries, 10)[1])


def test_ivf_is_deterministic_for_a_seed():
    docs, queries = _unit(3000), _unit(100, seed=1)
    runs = [top_k(build_index(docs, "ivf", nlist=40, nprobe=4, seed=7), queries, 10)[1] for _ in range(2)]
    assert np.array_equal(*runs)


def test_unknown_index_and_too_many_cells():
    with pytest.raises(StageError, match="unknown index 'pq'"):
        build_index(_unit(10), "pq")
    with pytest.raises(StageError, match="--nlist 20 exceeds the corpus size 10"):
        build_index(_unit(10), "ivf", nlist=20)


def test_dense_stage_reports_recall_against_flat(tmp_path, model_path):
    run = tmp_path / "run"
    common = ["--model", model_path, "--max-seq-length", "64", "--k", "20"]
    assert runner.invoke(app, ["ingest", "--data", str(SAMPLE), "--out", str(run)]).exit_code == 0
    flat = runner.invoke(app, ["dense", "--run", str(run), *common, "--json"])
    assert flat.exit_code == 0, flat.output
    flat_candidates = (run / "candidates_dense.parquet").read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    results = {}
    for target in (run, copy):  # the same approximate search twice: byte-identical
        result = runner.invoke(app, ["dense", "--run", str(target), *common, "--index", "hnsw", "--json"])
        assert result.exit_code == 0, result.output
        results[target] = json.loads(result.stdout)
    stats = results[run]["dense"]["stats"]
    assert results[run]["embed"]["skipped"]  # the index choice does not re-encode
    assert stats["index"] == "hnsw" and stats["recall_sample_queries"] == 60
    assert 0.9 <= stats["recall_vs_flat@20"] <= 1.0
    assert (run / "candidates_dense.parquet").read_bytes() == (copy / "candidates_dense.parquet").read_bytes()
    if stats["recall_vs_flat@20"] == 1.0:  # same documents (scores may differ in the last bits: another kernel)
        flat_table = pq.read_table(pa.BufferReader(flat_candidates))
        hnsw_table = pq.read_table(run / "candidates_dense.parquet")
        assert flat_table.select(["query_id", "doc_id"]).equals(hnsw_table.select(["query_id", "doc_id"]))
    # and back to flat: the config changed again, so the exact candidates come back
    back = runner.invoke(app, ["dense", "--run", str(run), *common, "--json"])
    assert back.exit_code == 0 and not json.loads(back.stdout)["dense"]["skipped"]
    assert (run / "candidates_dense.parquet").read_bytes() == flat_candidates
    refused = runner.invoke(app, ["dense", "--run", str(run), *common, "--index", "ivf", "--engine", "ray"])
    assert refused.exit_code == 2 and "runs on the local engine" in " ".join(refused.stderr.split())


def _mapped_kb(path) -> int:
    """This process's resident kB of the mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_an_index_built_from_the_embeddings_file_does_not_keep_the_file_resident(tmp_path):
    from negmine.retrieve.search import drop_mapped_pages, float32_blocks

    path = tmp_path / "corpus.npy"
    matrix = np.random.default_rng(0).standard_normal((20_000, 384)).astype(np.float16)  # 15 MB
    np.save(path, matrix)
    mapped = np.load(path, mmap_mode="r")
    assert float(np.asarray(mapped, dtype=np.float32).sum()) == pytest.approx(float(matrix.astype(np.float32).sum()), rel=1e-6)
    assert _mapped_kb(path) > 10_000  # read through the map: resident
    drop_mapped_pages(mapped)
    assert _mapped_kb(path) < 1_000
    blocks = list(float32_blocks(mapped, 6_000))
    assert [len(b) for b in blocks] == [6_000, 6_000, 6_000, 2_000] and all(b.dtype == np.float32 and b.flags.c_contiguous for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), matrix.astype(np.float32))
    assert _mapped_kb(path) < 1_000
    drop_mapped_pages(matrix)  # not a map: nothing happens


def test_sharded_exact_search_is_one_index_search():
    """Shards of any size, merged, give one flat index's scores and rows (ties by corpus row), and at
    faiss's 1,024-row BLAS blocks the very same floats."""
    from negmine.retrieve.search import flat_index, sharded_top_k

    rng = np.random.default_rng(3)
    distinct = rng.standard_normal((300, 16)).astype(np.float32)
    corpus = distinct[rng.integers(0, 300, 5000)].astype(np.float16)  # duplicates: exact ties everywhere
    batches = [rng.standard_normal((n, 16)).astype(np.float32) for n in (40, 7, 0)]  # BLAS and per-pair paths
    whole = flat_index(corpus)
    for k in (1, 10, 60):
        expected = [top_k(whole, q, k) for q in batches]
        for shard_size in (1024, 2048, 333, 5000, 10_000):
            got = sharded_top_k(corpus, batches, k, shard_size)
            for (es, er), (gs, gr) in zip(expected, got):
                np.testing.assert_array_equal(gr, er)
                if shard_size % 1024 == 0:
                    np.testing.assert_array_equal(gs, es)
                else:
                    np.testing.assert_allclose(gs, es, rtol=1e-6)
    assert [s.shape for s, _ in sharded_top_k(corpus[:0], batches, 5)] == [(40, 0), (7, 0), (0, 0)]
    with pytest.raises(StageError):
        sharded_top_k(corpus, batches, 5, 0)


def test_a_shard_is_searched_on_its_rows_without_an_index_copy_and_gives_the_index_floats(tmp_path):
    """ExactSearch (faiss.knn over the shard's float32 rows; no IndexFlatIP holding a second copy) returns
    the bytes an IndexFlatIP over the same rows returns, on the BLAS path and the per-pair one, with ties."""
    from negmine.retrieve.search import ExactSearch, flat_index, shard_searcher

    rng = np.random.default_rng(11)
    rows = rng.standard_normal((3000, 384)).astype(np.float16)
    rows[2000:2100] = rows[:100]
    np.save(tmp_path / "e.npy", rows)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    exact, index = ExactSearch(mapped), flat_index(rows)
    assert isinstance(shard_searcher(rows), ExactSearch) and exact.ntotal == index.ntotal == 3000
    assert _mapped_kb(tmp_path / "e.npy") < 1_000  # the map's pages dropped once copied
    for n in (300, 5):
        queries = rng.standard_normal((n, 384)).astype(np.float32)
        for k in (1, 101, 3000):
            got, want = exact.search(queries, k), index.search(queries, k)
            assert got[0].tobytes() == want[0].tobytes() and got[1].tobytes() == want[1].tobytes()


def test_torch_search_ranks_as_faiss_does_with_ties():
    """TorchSearch (what a GPU machine without faiss GPUs searches with; run here on the CPU) gives,
    through top_k, the rows faiss gives, ties ordered by corpus row, and the same scores to float32 rounding."""
    from negmine.retrieve.search import ExactSearch, TorchSearch, top_k

    rng = np.random.default_rng(3)
    rows = rng.standard_normal((2000, 64)).astype(np.float16)
    rows[1000:1100] = rows[:100]  # every query near one of these has a tie
    queries = rows[:50].astype(np.float32) + rng.standard_normal((50, 64)).astype(np.float32) * 0.01
    for k in (2, 10, 2000, 5000):
        got, want = top_k(TorchSearch(rows, device="cpu"), queries, k), top_k(ExactSearch(rows), queries, k)
        assert got[0].shape == want[0].shape == (50, min(k, 2000))
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-4)
        # the near-duplicate and its tied copy lead; deeper, scores a float32 rounding apart may swap
        assert (got[1][:, :2] == want[1][:, :2]).all()
        assert all(set(g) == set(w) for g, w in zip(got[1], want[1])) or k < 2000
    assert (top_k(TorchSearch(rows, device="cpu"), queries, 2)[1] == [[i, 1000 + i] for i in range(50)]).all()
    sliced = TorchSearch(rows, device="cpu")
    sliced.SCORE_CELLS = 2000 * 7  # seven queries per matrix product: the same answer, to float32 rounding
    got, want = top_k(sliced, queries, 10), top_k(TorchSearch(rows, device="cpu"), queries, 10)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-4)
    assert (got[1][:, :2] == want[1][:, :2]).all()


def test_scores_do_not_depend_on_which_queries_had_ties():
    """A query whose k-th score ties is searched again deeper; faiss's floats depend on how many queries
    share a search call, so the deeper search sends the whole batch: every score is the one a single
    deep search of the batch gives, whichever queries tied (and so whatever the shard size)."""
    from negmine.retrieve.search import flat_index, sharded_top_k

    rng = np.random.default_rng(5)
    corpus = rng.standard_normal((6000, 384)).astype(np.float16)
    corpus[3000:3200] = corpus[:200]  # some rows twice: ties for the queries near them
    queries = rng.standard_normal((1000, 384)).astype(np.float32)
    queries[:40] = corpus[:40].astype(np.float32) + rng.standard_normal((40, 384)).astype(np.float32) * 0.01
    index = flat_index(corpus)
    deep_scores, deep_rows = index.search(queries, 6000)
    for k in (1, 2, 9):
        scores, rows = top_k(index, queries, k)
        tied = index.search(queries, k + 1)[0]
        assert 0 < (tied[:, k - 1] == tied[:, k]).sum() < len(queries)  # some queries tie at the cut, not all
        for q in range(len(queries)):
            lookup = dict(zip(deep_rows[q].tolist(), deep_scores[q].tolist()))
            assert [lookup[r] for r in rows[q].tolist()] == scores[q].tolist(), (k, q)
        for shard_size in (1024, 2048, 4096):
            (got_scores, got_rows), = sharded_top_k(corpus, [queries], k, shard_size)
            np.testing.assert_array_equal(got_rows, rows)
            np.testing.assert_array_equal(got_scores, scores)


def test_embedding_rows_reads_the_rows_a_map_would_give(tmp_path):
    from negmine.retrieve.search import embedding_rows

    matrix = np.random.default_rng(1).standard_normal((5000, 24)).astype(np.float16)
    np.save(tmp_path / "e.npy", matrix)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    for rows in ([4999, 0, 17, 17], list(range(0, 5000, 3)), []):  # a few rows (read one by one), many (the map)
        got = embedding_rows(mapped, np.array(rows, dtype=np.int64))
        assert got.dtype == np.float32 and got.shape == (len(rows), 24)
        np.testing.assert_array_equal(got, matrix[rows].astype(np.float32))
        np.testing.assert_array_equal(embedding_rows(matrix, rows), got)  # an in-memory array
    with pytest.raises(IndexError):
        embedding_rows(mapped, [5000])


def test_ranked_hits_names_the_rows_found():
    from negmine.retrieve.search import ranked_hits

    ids = pa.chunked_array([["a", "b"], ["c", "d"]])
    scores = np.array([[0.9, 0.5, 0.1], [0.7, -1.0, -1.0]], np.float32)
    rows = np.array([[3, 0, 2], [1, -1, -1]])
    assert ranked_hits(scores, rows, ids) == [[("d", pytest.approx(0.9)), ("a", 0.5), ("c", pytest.approx(0.1))], [("b", pytest.approx(0.7))]]
