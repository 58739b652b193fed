"""The distributed engine (``--engine ray``): the dense and rescore stages as Ray jobs.

When a corpus outgrows one machine, the same units of work the local engine runs one after the
other run on a Ray cluster (Moritz et al., "Ray: A Distributed Framework for Emerging AI
Applications", OSDI 2018):

- **encoding**: the corpus is cut into parts of ``chunk_size`` documents and the queries into
  parts of ``query_batch``, exactly the chunks :func:`negmine.retrieve.embed.embed_corpus` and
  :func:`negmine.retrieve.search.dense_candidates` encode one call each; a pool of Ray actors, each
  loading the sentence-transformers model once (one GPU per actor when the cluster has GPUs),
  runs :func:`negmine.retrieve.encode.encode` on them. The driver writes the embeddings into the run's
  ``embeddings/corpus.npy`` with :func:`negmine.retrieve.embed.write_embeddings`, the local engine's format,
  so reruns and later stages reuse them whichever engine made them.
- **search**: the corpus embeddings are split into shards of ``shard_size`` rows; one Ray task per
  shard builds its own exact faiss index and returns each query batch's :func:`negmine.retrieve.search.top_k`;
  the driver merges them with :func:`negmine.retrieve.search.merge_top_k` (score descending, then corpus
  row), which is what one index over the whole corpus returns.
- **rescoring**: :class:`RayTeacher` runs the parts of :func:`negmine.rescore.plan_scores`
  (chunks of pairs for a cross-encoder, chunks of distinct texts for a bi-encoder) on a pool of
  actors each holding the teacher; :func:`negmine.rescore.rescore` combines them as usual.

Outputs are identical to the local engine's (byte for byte, tested): a transformer's floats
depend on which texts share a padded batch, and every part here is one whole local encode call;
faiss scores of a (query, document) pair do not depend on the shard. Identity holds between runs
on the same kind of device: GPU actors give GPU floats, as the local engine on a GPU machine does.

An actor that dies while it holds parts (killed, out of memory, its node lost) is replaced and those
parts are redone on the new one, so the outputs are the same bytes; a part whose actor keeps dying
stops the stage after :data:`PART_RETRIES` retries, naming the part. The stage's stats record
``actors_replaced``.

Parts travel through Ray's object store, so the nodes need no shared file system; each node needs
negmine (``pip install 'negmine[ray]'``) and access to the model (a hub name or a path that exists
on every node). Ray is imported only when this engine runs.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from negmine.retrieve.embed import EMBED_CHUNK
from negmine.retrieve.search import SHARD_SIZE
from negmine.errors import NegmineError, StageError
from negmine.io import LazyTable
from negmine.progress import track

# items queued per actor ahead of the results taken (ModelPool.map): one running, one waiting
IN_FLIGHT = 2
# times a part is sent again after the actor running it died (killed, out of memory, its node lost),
# each time to a new actor started in its place, before the stage stops with an error naming the part
PART_RETRIES = 3
_END = object()


def _ray():
    try:
        import ray
    except ImportError:
        raise StageError("--engine ray needs Ray: pip install 'negmine[ray]'") from None
    return ray


def connect(address: str | None = None) -> None:
    """Connect to the Ray cluster at ``address`` (default: ``RAY_ADDRESS``, else a running local
    cluster, else a new local one), unless this process is connected already.

    The connection stays open for the next stage (``negmine mine`` runs dense then rescore); Ray's own
    exit hook disconnects, and stops a local cluster it started, when the process ends.
    """
    ray = _ray()
    if ray.is_initialized():
        return
    from negmine.engines.signals import handlers_kept

    address = address or os.environ.get("RAY_ADDRESS") or None
    with handlers_kept():  # a JVM in this process (pyserini's BM25) keeps its crash-signal handlers
        if address and "://" in address:  # Ray Client (ray://head:10001) takes no local-cluster options
            ray.init(address=address)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


@contextlib.contextmanager
def _unwrapped(ray) -> Iterator[None]:
    """Re-raise a NegmineError raised inside a Ray task as itself (message and exit code intact)."""
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, NegmineError):
            raise exc.cause from None
        raise


class _ModelWorker:
    """A Ray actor holding one model, loaded once: a bi-encoder (``encoder``) or a teacher (``teacher``)."""

    def load(self, what: str, spec: str, max_length: int | None, precision: str = "float32", backend: str = "torch") -> int | None:
        if what == "encoder":
            from negmine.retrieve.encode import embedding_dim
            from negmine.retrieve.models import load_model

            self.model = load_model(spec, max_length, precision=precision, backend=backend)
            return embedding_dim(self.model)
        from negmine.rescore import load_teacher

        self.model = load_teacher(spec, max_length)
        return None

    def encode(self, item: tuple[list[str], str | None], batch_size: int) -> np.ndarray:
        """Embeddings of ``item = (texts, prompt)``, the prompt (None: none) put before every text."""
        from negmine.retrieve.encode import encode

        texts, prompt = item
        return encode(self.model, texts, batch_size, prompt=prompt)

    def run_part(self, part: tuple, batch_size: int) -> np.ndarray:
        return self.model.run_part(part, batch_size)


def _in_order(ray, submit: Callable, items: Iterable, window: int, redo: Callable | None = None) -> Iterator:
    """``ray.get(submit(i, item))`` for each item in order, with at most ``window`` submitted and not yet
    taken: ``items`` (a generator, say) is read only as results are taken.

    When the actor running an item dies, ``redo(i, item, deaths, error)`` returns the item's new
    reference (``deaths`` counts the times it died); without ``redo`` the error propagates."""
    source = iter(items)
    pending = collections.deque((i, item, submit(i, item)) for i, item in zip(range(window), source))
    sent = len(pending)
    with _unwrapped(ray):
        while pending:
            i, item, ref = pending.popleft()
            deaths = 0
            while True:
                try:
                    result = ray.get(ref)
                    break
                except ray.exceptions.RayActorError as exc:
                    if redo is None:
                        raise
                    deaths += 1
                    ref = redo(i, item, deaths, exc)
            following = next(source, _END)
            if following is not _END:
                pending.append((sent, following, submit(sent, following)))
                sent += 1
            yield result


class ModelPool:
    """A pool of :class:`_ModelWorker` actors, started on first use: one per GPU when the cluster has
    GPUs, else one per CPU (at most ``max_actors``, and never more than there are parts).

    An actor that dies while it holds parts (killed, out of memory, its node lost) is replaced by a new
    one that loads the model, and those parts are sent to it again; a part is deterministic, so the
    results are the same bytes. A part whose actor dies more than :data:`PART_RETRIES` times stops the
    stage (:class:`~negmine.errors.StageError` naming the part)."""

    def __init__(self, what: str, spec: str, max_length: int | None, address: str | None = None, max_actors: int | None = None, precision: str = "float32",
                 backend: str = "torch"):
        if max_actors is not None and max_actors < 1:
            raise StageError(f"the {what} pool needs at least 1 actor, got {max_actors}")
        self.what, self.spec, self.max_length, self.address, self.max_actors = what, spec, max_length, address, max_actors
        self.precision, self.backend = precision, backend
        self.actors: list = []
        self.started = 0  # actors started (recorded in the stage's stats)
        self.replaced = 0  # actors that died and were replaced (recorded in the stage's stats)
        self._worker = None
        self.dim: int | None = None

    def _start(self, parts: int) -> None:
        ray = _ray()
        connect(self.address)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        options = {"num_cpus": 1, "num_gpus": 1} if gpus else {"num_cpus": 1}
        n = min(max(parts, 1), gpus or max(int(resources.get("CPU", 1)), 1), self.max_actors or parts or 1)
        self._worker = ray.remote(_ModelWorker).options(**options)
        self.actors = [self._worker.remote() for _ in range(n)]
        self.started = n
        with _unwrapped(ray):
            self.dim = ray.get([a.load.remote(self.what, self.spec, self.max_length, self.precision, self.backend) for a in self.actors])[0]

    def _replace(self, slot: int, dead) -> None:
        """A new actor, with the model loaded, in place of ``dead`` at ``slot`` (unless another of its
        parts has replaced it already)."""
        if self.actors[slot] is not dead:
            return
        ray = _ray()
        with contextlib.suppress(Exception):  # already gone, as a rule
            ray.kill(dead)
        actor = self._worker.remote()
        self.actors[slot] = actor
        self.replaced += 1
        # one that dies while loading fails the part sent to it next, which counts as one more death
        with _unwrapped(ray), contextlib.suppress(ray.exceptions.RayActorError):
            ray.get(actor.load.remote(self.what, self.spec, self.max_length, self.precision, self.backend))

    def map(self, method: str, items: Iterable, batch_size: int, count: int | None = None) -> Iterator[np.ndarray]:
        """``method(item, batch_size)`` of every item on the actors; results in the order of ``items``.

        ``items`` may be a generator (``count`` then says how many it yields, for the number of actors to
        start): it is read as actors become free, at most :data:`IN_FLIGHT` items per actor ahead of the
        results taken, so the driver holds a window of items, not all of them."""
        ray = _ray()
        if count is None:
            items = list(items)
            count = len(items)
        if not count:
            return iter(())
        if not self.actors:
            self._start(count)
        n = len(self.actors)
        sent_to: dict[int, object] = {}  # item -> the actor it was last sent to, until its result is taken

        def call(i: int, item):
            # item i runs on the actor in slot i mod n: an actor's calls run in the order sent, and the
            # item sent when result i is taken (i + window) goes to the actor that has just finished it
            sent_to[i] = actor = self.actors[i % n]
            return getattr(actor, method).remote(item, batch_size)

        def redo(i: int, item, deaths: int, exc: Exception):
            if deaths > PART_RETRIES:
                raise StageError(
                    f"{self.what} part {i + 1} of {count}: the Ray actor running it died {deaths} times, each time replaced "
                    f"and the part sent again (last: {type(exc).__name__}); see the cluster's logs (`ray logs`) for why"
                ) from None
            self._replace(i % n, sent_to[i])
            return call(i, item)

        def results():
            for i, result in enumerate(_in_order(ray, call, items, IN_FLIGHT * n, redo)):
                sent_to.pop(i, None)
                yield result

        return results()

    def release(self) -> None:
        """Stop the actors (their CPUs/GPUs go back to the cluster); the next :meth:`map` starts new ones."""
        if self.actors:
            ray = _ray()
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []

    def close(self) -> None:
        self.release()


class RayTeacher:
    """A teacher whose parts (:func:`negmine.rescore.plan_scores`) run on Ray actors; pass it to
    :func:`negmine.rescore.rescore` in place of a loaded :class:`negmine.rescore.Teacher`."""

    def __init__(self, spec: str, max_length: int | None = 512, address: str | None = None, max_actors: int | None = None):
        from negmine.rescore import check_teacher

        self.kind, self.name = check_teacher(spec)
        self.pool = ModelPool("teacher", spec, max_length, address, max_actors)

    def map_parts(self, parts: list[tuple], batch_size: int = 32) -> Iterator[np.ndarray]:
        return self.pool.map("run_part", parts, batch_size)

    def close(self) -> None:
        self.pool.close()


def encoder_pool(model: str, max_seq_length: int | None = 256, address: str | None = None, max_actors: int | None = None, precision: str = "float32",
                 backend: str = "torch") -> ModelPool:
    """Bi-encoder actors for :func:`embed_corpus` and :func:`dense_candidates` (nothing starts until used)."""
    from negmine.retrieve.models import check_model

    check_model(model)  # a missing model path fails here, before any actor starts
    return ModelPool("encoder", model, max_seq_length, address, max_actors, precision, backend)


def embed_corpus(
    corpus: "pa.Table | LazyTable",
    encoders: ModelPool,
    path,
    dtype: str = "float16",
    batch_size: int = 64,
    chunk_size: int = EMBED_CHUNK,
    progress: Callable[[int], None] | None = None,
    parts_dir=None,
    resumed: dict | None = None,
    prompt: str | None = None,
) -> np.ndarray:
    """:func:`negmine.retrieve.embed.embed_corpus` with each chunk encoded on a Ray actor; same file, same bytes.

    ``parts_dir`` and ``resumed`` as there: the driver keeps each finished chunk in ``parts_dir`` and
    reads those already there instead of sending them out again, so an interrupted encode resumes (from
    chunks either engine wrote: their bytes are the same). The driver reads the corpus (a table or a
    :class:`~negmine.io.LazyTable`) a chunk at a time as actors become free: it holds the texts of the
    chunks in flight, not the corpus's.
    """
    from negmine.retrieve.candidates import doc_texts
    from negmine.retrieve.embed import corpus_slices, write_embeddings

    texts = ((doc_texts(chunk), prompt) for chunk in corpus_slices(corpus, chunk_size))
    sizes = [min(chunk_size, len(corpus) - start) for start in range(0, len(corpus), chunk_size)]  # each chunk's rows
    if parts_dir is None:
        blocks = encoders.map("encode", texts, batch_size, count=len(sizes))
        dim = encoders.dim
    else:
        blocks, dim = _resumable_blocks(encoders, texts, sizes, batch_size, Path(parts_dir), dtype, resumed if resumed is not None else {})
    if dim is None:  # an empty corpus still gets a (0, dim) file
        encoders._start(1)
        dim = encoders.dim
    emb = write_embeddings(path, blocks, len(corpus), dim, dtype, progress)
    if parts_dir is not None:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return emb


def _resumable_blocks(encoders: ModelPool, texts: Iterator[tuple[list[str], str | None]], sizes: list[int], batch_size: int, parts_dir: Path, dtype: str, resumed: dict):
    """(the blocks in corpus order, their width): kept chunks read from ``parts_dir``, the others (``texts``
    gives every chunk's, in order; ``sizes`` their lengths) encoded on the actors and kept there (each
    written atomically) as they arrive."""
    from negmine.retrieve.embed import DTYPES, kept_part, save_part

    kept = {i: block.shape for i, block in ((i, kept_part(parts_dir, i, rows, mmap=True)) for i, rows in enumerate(sizes)) if block is not None}
    resumed["documents"] = sum(shape[0] for shape in kept.values())
    missing = [i for i in range(len(sizes)) if i not in kept]
    encoded = encoders.map("encode", (t for i, t in enumerate(texts) if i not in kept), batch_size, count=len(missing))
    dim = encoders.dim if missing else (next(iter(kept.values()))[1] if kept else None)

    def blocks():
        for i in range(len(sizes)):
            if i in kept:
                yield kept_part(parts_dir, i, kept[i][0])
            else:
                block = next(encoded).astype(DTYPES[dtype])
                save_part(parts_dir, i, block)
                yield block

    return blocks(), dim


def _search_shard(shard: np.ndarray, offset: int, k: int, threads: int, *query_batches: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """One shard's exact index and each query batch's top-k (rows numbered in the whole corpus)."""
    import faiss

    from negmine.retrieve.search import shard_searcher, top_k

    faiss.omp_set_num_threads(threads)
    index = shard_searcher(shard)
    return [(scores, rows + offset) for scores, rows in (top_k(index, emb, k) for emb in query_batches)]


def dense_candidates(
    corpus: pa.Table,
    queries: pa.Table,
    qrels: pa.Table,
    corpus_embeddings: np.ndarray,
    encoders: ModelPool,
    k: int = 100,
    batch_size: int = 64,
    query_batch: int = 4096,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    shard_size: int | None = None,
    prompt: str | None = None,
) -> tuple[pa.Table, pa.Table]:
    """:func:`negmine.retrieve.search.dense_candidates` with query batches encoded on Ray actors and the search
    sharded over Ray tasks of one CPU each (``shard_size`` corpus rows, ``threads`` faiss threads); same tables."""
    from negmine.retrieve.search import check_embeddings, dense_tables, drop_mapped_pages, merge_top_k, ranked_hits
    from negmine.retrieve.encode import chunks

    check_embeddings(corpus, corpus_embeddings)
    shard_size = shard_size or SHARD_SIZE
    if shard_size < 1:
        raise StageError(f"shard size must be at least 1, got {shard_size}")
    ray = _ray()
    query_emb = list(encoders.map("encode", ((texts, prompt) for texts in chunks(queries.column("text").to_pylist(), query_batch)), batch_size))
    encoders.release()  # their CPUs/GPUs go to the search tasks
    connect(encoders.address)
    ids = corpus.column("doc_id")
    k_eff = min(k, len(ids))
    query_refs = [ray.put(emb) for emb in query_emb]
    search = ray.remote(_search_shard).options(num_cpus=1)

    def send(_, start: int):
        # a shard is copied into the object store when its task is sent (at most IN_FLIGHT per CPU at a
        # time, not the whole embeddings matrix at once), and the map's pages it was read through dropped
        shard = ray.put(np.ascontiguousarray(corpus_embeddings[start : start + shard_size]))
        drop_mapped_pages(corpus_embeddings)
        return search.remote(shard, start, k_eff, threads or 1, *query_refs)

    window = IN_FLIGHT * max(int(ray.cluster_resources().get("CPU", 1)), 1)
    per_shard = []
    with track(len(ids), "docs", "search") as bar:
        for start, results in zip(range(0, len(ids), shard_size), _in_order(ray, send, range(0, len(ids), shard_size), window)):
            per_shard.append(results)
            bar.update_to(min(start + shard_size, len(ids)))
    hits = []
    for b, emb in enumerate(query_emb):
        if per_shard:
            hits.extend(ranked_hits(*merge_top_k([results[b] for results in per_shard], k_eff), ids))
        else:  # an empty corpus: no shard, no hits
            hits.extend([] for _ in range(len(emb)))
        if progress:
            progress(len(emb))
    return dense_tables(corpus, queries, qrels, corpus_embeddings, query_emb, hits)
