"""Dense search: faiss inner-product search over the corpus embeddings, and s(q, d+) of every positive.

Embeddings are L2-normalised, so inner product is cosine similarity: s(q, d) = <E(q), E(d)> in [-1, 1].
Search is exact (``IndexFlatIP``) in query batches over corpus shards, on GPU when
``faiss.get_num_gpus() > 0``, or approximate (IVF, HNSW). Every labelled positive is scored too, so
s(q, d+) is known even when retrieval missed it.

Ties in score are broken by corpus row (the earlier document first), at the top-k cut-off too
(:func:`top_k`), so a search over corpus shards merged with :func:`merge_top_k` returns exactly
what one index over the whole corpus returns (``negmine.engines.ray`` relies on it). The units of
work, :func:`~negmine.retrieve.encode.encode` of one chunk of texts and :func:`top_k` of one query
batch, are the same in both engines.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negmine.errors import StageError
from negmine.progress import track
from negmine.retrieve.candidates import candidates_table, positive_scores_table
from negmine.retrieve.encode import chunks, encode


def flat_index(embeddings: np.ndarray, chunk_size: int = 65536):
    import faiss

    index = faiss.IndexFlatIP(embeddings.shape[1])
    if faiss.get_num_gpus() > 0:  # pragma: no cover - no GPU on CI
        index = faiss.index_cpu_to_all_gpus(index)
    for block in float32_blocks(embeddings, chunk_size):
        index.add(block)
    return index


class ExactSearch:
    """Exact inner-product search over one block of rows, held as float32: ``faiss.knn`` on the block
    itself — the function an ``IndexFlatIP``'s search runs, so the same scores and rows as that index
    (tested) — without the index's own copy of the rows (a second float32 copy of the block)."""

    def __init__(self, embeddings: np.ndarray):
        self.vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        drop_mapped_pages(embeddings)
        self.ntotal = len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        return faiss.knn(queries, self.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)


class TorchSearch:
    """Exact inner-product search with torch on ``device`` (a GPU where faiss has none: the faiss on
    PyPI is CPU-only): the rows are held there as float32, each query batch is one matrix product.
    Same ``ntotal`` / ``search`` as a faiss index, so :func:`top_k` orders and cuts ties the same way."""

    SCORE_CELLS = 1 << 27

    def __init__(self, embeddings: np.ndarray, device: str = "cuda"):
        import torch

        self.device = device
        self.vectors = torch.cat([torch.from_numpy(b).to(device) for b in float32_blocks(embeddings)]) if len(embeddings) else torch.zeros((0, embeddings.shape[1]), device=device)
        self.ntotal = len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Queries go in slices whose score matrix stays under ``SCORE_CELLS`` floats (512 MB)."""
        import torch

        k = min(k, self.ntotal)
        step = max(1, self.SCORE_CELLS // max(self.ntotal, 1))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
        with torch.no_grad():
            for start in range(0, len(queries), step):
                q = torch.from_numpy(queries[start : start + step]).to(self.device)
                s, r = torch.topk(q @ self.vectors.T, k, dim=1)
                scores[start : start + step], rows[start : start + step] = s.cpu().numpy(), r.cpu().numpy()
        return scores, rows


def shard_searcher(embeddings: np.ndarray):
    """What searches one shard exactly: on CPU :class:`ExactSearch`; on a GPU machine a faiss GPU index
    where faiss has GPUs, else :class:`TorchSearch`."""
    from negmine.retrieve.device import auto_device

    if auto_device().startswith("cuda"):  # pragma: no cover - no GPU on CI
        try:
            import faiss

            gpus = faiss.get_num_gpus()
        except ImportError:
            gpus = 0
        return flat_index(embeddings) if gpus > 0 else TorchSearch(embeddings)
    return ExactSearch(embeddings)


def float32_blocks(embeddings: np.ndarray, chunk_size: int = 65536):
    """Consecutive rows of ``embeddings`` as contiguous float32 blocks (what faiss adds). Rows of a
    memory-mapped file leave this process's resident memory once read: an index built from the
    file holds the index, not the index and the file (the pages stay in the OS's cache)."""
    for start in range(0, embeddings.shape[0], chunk_size):
        block = np.ascontiguousarray(embeddings[start : start + chunk_size], dtype=np.float32)
        drop_mapped_pages(embeddings)
        yield block


def drop_mapped_pages(array: np.ndarray) -> None:
    """``madvise(MADV_DONTNEED)`` on a read-only memory map: its pages are unmapped from this process
    and read back from the file (the page cache) when next used. A no-op for anything else."""
    import mmap

    mapped = getattr(array, "_mmap", None)
    if mapped is None or getattr(array, "mode", None) != "r" or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        mapped.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed map, or a platform without it
        pass


def embedding_rows(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``embeddings[rows]`` as float32. From a memory-mapped ``.npy`` the rows are read from the file one by
    one (``pread``): indexing the map instead faults in the pages around each row (the kernel reads ahead),
    so rows scattered over a large file leave much of it resident. Where the rows are a good
    share of the file (one in 64 or more: each of its pages is read anyway) the map is indexed, then its
    pages dropped (:func:`drop_mapped_pages`)."""
    rows = np.asarray(rows, dtype=np.int64)
    filename = getattr(embeddings, "filename", None)
    if not isinstance(embeddings, np.memmap) or filename is None or not embeddings.flags.c_contiguous or embeddings.ndim != 2:
        return np.asarray(embeddings[rows], dtype=np.float32)
    if len(rows) * 64 >= embeddings.shape[0]:
        out = np.asarray(embeddings[rows], dtype=np.float32)
        drop_mapped_pages(embeddings)
        return out
    if len(rows) and (rows.min() < 0 or rows.max() >= embeddings.shape[0]):
        raise IndexError(f"row out of range for {embeddings.shape[0]} embeddings")
    out = np.empty((len(rows), embeddings.shape[1]), dtype=embeddings.dtype)
    width = embeddings.shape[1] * embeddings.itemsize
    fd = os.open(filename, os.O_RDONLY)
    try:
        for i, row in enumerate(rows.tolist()):
            out[i] = np.frombuffer(os.pread(fd, width, embeddings.offset + row * width), dtype=embeddings.dtype)
    finally:
        os.close(fd)
    return out.astype(np.float32, copy=False)


INDEXES = ("flat", "ivf", "hnsw")


RECALL_SAMPLE = 1000  # queries searched exactly as well, to report an approximate index's recall against flat


def build_index(embeddings: np.ndarray, kind: str = "flat", nlist: int | None = None, nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, seed: int = 0, chunk_size: int = 65536):
    """A faiss inner-product index over ``embeddings``: ``flat`` (exact), ``ivf`` (IVF-Flat, ``nlist``
    k-means cells, default 4·√n, trained on at most 256·nlist rows drawn with ``seed``; ``nprobe`` cells
    searched) or ``hnsw`` (HNSW-Flat graph, ``hnsw_m`` links, efConstruction 200, ``ef_search``).

    Deterministic: k-means gets ``seed``, and the HNSW graph is built on one thread (faiss inserts in
    parallel otherwise, and the graph would depend on thread timing).
    """
    import faiss

    if kind not in INDEXES:
        raise StageError(f"unknown index {kind!r}; choose from {list(INDEXES)}")
    if kind == "flat":
        return flat_index(embeddings, chunk_size)
    n, dim = embeddings.shape
    if kind == "ivf":
        nlist = int(nlist or max(1, min(n, round(4 * n**0.5))))
        if nlist > n:
            raise StageError(f"--nlist {nlist} exceeds the corpus size {n}")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        train_rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, 256 * nlist), replace=False))
        index.train(np.ascontiguousarray(embedding_rows(embeddings, train_rows)))
        drop_mapped_pages(embeddings)
        index.nprobe = min(nprobe, nlist)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.hnsw.efSearch = ef_search
    threads = faiss.omp_get_max_threads()
    if kind == "hnsw":
        faiss.omp_set_num_threads(1)
    try:
        for block in float32_blocks(embeddings, chunk_size):
            index.add(block)
    finally:
        faiss.omp_set_num_threads(threads)
    return index


def recall_against_flat(index, embeddings: np.ndarray, query_embeddings: np.ndarray, k: int) -> float:
    """Share of the exact top-``k`` (flat search) that ``index`` also returns, over ``query_embeddings``."""
    if len(query_embeddings) == 0 or k == 0:
        return 1.0
    exact = sharded_top_k(embeddings, [query_embeddings], k)[0][1]
    approx = top_k(index, query_embeddings, k)[1]
    found = sum(len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return found / exact.size


def top_k(index, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of ``index`` per query, by score descending then row ascending.

    faiss orders (and cuts) equal scores by its heap's internals; searching one row more than
    asked shows whether a tie straddles the cut-off, and those queries are searched again deeper.
    The deeper search sends the whole batch again: faiss's float for a (query, row) pair depends on
    how many queries share the call (a subset of a 1,000-query batch gets floats that differ in the
    last bit), so searching only the tied queries would make the scores depend on where ties fell —
    on the shard size, for one. Returns ``(scores, rows)`` of shape (queries, min(k, index.ntotal)).
    """
    n = int(index.ntotal)
    k = min(k, n)
    if k == 0 or len(query_embeddings) == 0:
        return np.zeros((len(query_embeddings), k), np.float32), np.zeros((len(query_embeddings), k), np.int64)
    scores_k = np.empty((len(query_embeddings), k), np.float32)
    rows_k = np.empty((len(query_embeddings), k), np.int64)
    todo, depth = np.arange(len(query_embeddings)), k + 1
    queries = np.ascontiguousarray(query_embeddings)
    while len(todo):
        depth = min(depth, n)
        scores, rows = index.search(queries, depth)
        scores, rows = scores[todo], rows[todo]
        cut = (scores[:, k - 1] == scores[:, depth - 1]) & (depth < n) if depth > k else np.zeros(len(todo), bool)
        done = ~cut
        order = np.lexsort((rows[done], -scores[done]), axis=-1)[:, :k]
        scores_k[todo[done]] = np.take_along_axis(scores[done], order, -1)
        rows_k[todo[done]] = np.take_along_axis(rows[done], order, -1)
        todo, depth = todo[cut], depth * 2
    return scores_k, rows_k


def merge_top_k(shards: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge the per-shard :func:`top_k` results ``(scores, global rows)`` of the same queries into one top-``k``
    with the same order: score descending, then row ascending."""
    scores = np.concatenate([s for s, _ in shards], axis=1)
    rows = np.concatenate([r for _, r in shards], axis=1)
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, -1), np.take_along_axis(rows, order, -1)


def ranked_hits(scores: np.ndarray, rows: np.ndarray, ids: "pa.Array | pa.ChunkedArray") -> list[list[tuple[str, float]]]:
    """Per query, its (doc_id, score) best first (faiss's -1 rows, "no result", dropped); ``ids`` is the
    corpus's doc_id column, of which only the rows found become Python strings (a list of every id
    would hold a Python string object for every document of the corpus)."""
    found = rows >= 0
    names = iter(ids.take(pa.array(rows[found])).to_pylist())
    return [[(next(names), float(s)) for ok, s in zip(row_ok, row_s) if ok] for row_ok, row_s in zip(found, scores)]


def check_embeddings(corpus: pa.Table, corpus_embeddings: np.ndarray) -> None:
    if corpus_embeddings.shape[0] != corpus.num_rows:
        raise StageError(
            f"corpus embeddings have {corpus_embeddings.shape[0]} rows but the corpus has {corpus.num_rows}; rerun the embed stage"
        )


# Corpus rows per exact-search shard: a multiple of faiss's 1,024-row BLAS block, so every score is
# computed by the same BLAS call as in one index over the whole corpus (same floats). A shard is a float32
# copy of 65,536 × dimensions × 4 bytes, whatever the corpus size. Exact search scores every query against
# every row whatever the shard size, so the size barely changes the search time, while larger shards raise
# the stage's peak memory by their float32 copy (bench/scale.py reports the dense stage's time and peak RSS).
SHARD_SIZE = 1 << 16


def sharded_top_k(embeddings: np.ndarray, query_batches: list[np.ndarray], k: int, shard_size: int = SHARD_SIZE) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`top_k` of each query batch over all of ``embeddings`` by exact inner product, one flat index
    of ``shard_size`` rows at a time (:func:`shard_searcher`), merged (:func:`merge_top_k`): the same scores,
    rows and order as one index over every row, with at most one shard's float32 copy in memory."""
    if shard_size < 1:
        raise StageError(f"shard size must be at least 1, got {shard_size}")
    n = embeddings.shape[0]
    if n == 0:
        return [top_k(flat_index(embeddings), emb, k) for emb in query_batches]
    per_batch: list[list] = [[] for _ in query_batches]
    with track(n, "docs", "search") as bar:
        for start in range(0, n, shard_size):
            shard = shard_searcher(embeddings[start : start + shard_size])
            for found, emb in zip(per_batch, query_batches):
                scores, rows = top_k(shard, emb, k)
                found.append((scores, rows + start))
            del shard
            bar.update_to(min(start + shard_size, n))
    return [merge_top_k(found, min(k, n)) for found in per_batch]


def dense_candidates(
    corpus: pa.Table,
    queries: pa.Table,
    qrels: pa.Table,
    corpus_embeddings: np.ndarray,
    model,
    k: int = 100,
    batch_size: int = 64,
    query_batch: int = 4096,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    index: str = "flat",
    index_params: dict | None = None,
    stats: dict | None = None,
    shard_size: int = SHARD_SIZE,
    prompt: str | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Top-``k`` candidates per query by inner product, and s(q, d+) of every labelled positive.

    Returns ``(candidates, positive_scores)`` with ``source = 'dense'``. With an approximate ``index``
    (``ivf``, ``hnsw``: see :func:`build_index`, ``index_params`` its keyword arguments) the first
    ``RECALL_SAMPLE`` queries are searched exactly too and ``stats['recall_vs_flat']`` (when a dict
    is passed) records the share of the exact top-``k`` the index found. Exact (``flat``) search runs
    over ``shard_size`` corpus rows at a time (:func:`sharded_top_k`).
    """
    import faiss

    check_embeddings(corpus, corpus_embeddings)
    if threads:
        faiss.omp_set_num_threads(threads)
    ids = corpus.column("doc_id")
    hits, query_emb = [], []
    if index == "flat":  # exact: the corpus a shard at a time, so the float32 copy faiss searches stays bounded
        with track(queries.num_rows, "queries", "encode queries") as bar:
            for texts in chunks(queries.column("text").to_pylist(), query_batch):
                query_emb.append(encode(model, texts, batch_size, prompt=prompt, on_batch=bar.advance if bar.active else None))
        for emb, (scores, rows) in zip(query_emb, sharded_top_k(corpus_embeddings, query_emb, k, shard_size)):
            hits.extend(ranked_hits(scores, rows, ids))
            if progress:
                progress(len(emb))
        return dense_tables(corpus, queries, qrels, corpus_embeddings, query_emb, hits)
    searcher = build_index(corpus_embeddings, index, **(index_params or {}))
    with track(queries.num_rows, "queries", "search") as bar:
        for texts in chunks(queries.column("text").to_pylist(), query_batch):
            emb = encode(model, texts, batch_size, prompt=prompt)
            hits.extend(ranked_hits(*top_k(searcher, emb, k), ids))
            query_emb.append(emb)
            bar.advance(len(emb))
            if progress:
                progress(len(emb))
    if stats is not None and query_emb:
        sample = np.concatenate(query_emb)[:RECALL_SAMPLE]
        stats["index"] = index
        stats[f"recall_vs_flat@{k}"] = round(recall_against_flat(searcher, corpus_embeddings, sample, k), 4)
        stats["recall_sample_queries"] = len(sample)
    return dense_tables(corpus, queries, qrels, corpus_embeddings, query_emb, hits)


def dense_tables(
    corpus: pa.Table,
    queries: pa.Table,
    qrels: pa.Table,
    corpus_embeddings: np.ndarray,
    query_emb: list[np.ndarray],
    hits: list[list[tuple[str, float]]],
) -> tuple[pa.Table, pa.Table]:
    """``(candidates, positive_scores)`` from each query's ranked hits; positives retrieval missed are
    scored ⟨E(q), E(d+)⟩ from the query and stored corpus embeddings."""
    qids = queries.column("query_id").to_pylist()
    candidates = candidates_table(qids, hits, "dense")
    query_emb = np.concatenate(query_emb) if query_emb else np.zeros((0, corpus_embeddings.shape[1]), np.float32)
    row_of_query = {q: i for i, q in enumerate(qids)}

    def score_missing(pairs):
        q = query_emb[[row_of_query[p[0]] for p in pairs]]
        # the positives' rows by Arrow's hash lookup (doc ids are unique): no dict of every id in Python
        doc_rows = pc.index_in(pa.array([p[1] for p in pairs], pa.string()), value_set=corpus.column("doc_id").combine_chunks())
        d = embedding_rows(corpus_embeddings, doc_rows.to_numpy(zero_copy_only=False))
        return np.einsum("ij,ij->i", q, d).tolist()

    return candidates, positive_scores_table(candidates, qrels, qids, "dense", score_missing)
