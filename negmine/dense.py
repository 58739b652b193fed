"""Stage 3 — dense candidates: sentence-transformers bi-encoder + faiss inner-product search.

Embeddings are L2-normalised, so inner product is cosine similarity: s(q, d) = ⟨E(q), E(d)⟩ ∈ [−1, 1].
The corpus is encoded in chunks straight into a memory-mapped ``.npy`` file (float16 or float32)
in the run directory, so a rerun with the same model and corpus does not re-encode. Search is
exact (``IndexFlatIP``) in query batches, on GPU when ``faiss.get_num_gpus() > 0``. Every labelled
positive is scored too, so s(q, d+) is known even when retrieval missed it.

Ties in score are broken by corpus row (the earlier document first), at the top-k cut-off too
(:func:`top_k`), so a search over corpus shards merged with :func:`merge_top_k` returns exactly
what one index over the whole corpus returns (``negmine.engine_ray`` relies on it). The units of
work, :func:`encode` of one chunk of texts and :func:`top_k` of one query batch, are the same in
both engines: a transformer's floats depend on which texts share a padded batch, so the chunks
(``chunk_size`` documents, ``query_batch`` queries) are part of what an output depends on.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from negmine.candidates import candidates_table, doc_texts, positive_scores_table
from negmine.errors import BadInputError, StageError
from negmine.io import LazyTable, atomic_path, malloc_trim, table_slices

DTYPES = {"float16": np.float16, "float32": np.float32}

# The encoder's weights and activations while encoding (``--precision``); embeddings are normalised
# in float32 whatever the precision. bfloat16 encoded 1.75x faster on a CPU with AVX512-BF16
# (bench/encode_efficiency.py), embeddings within cosine 1e-4 of float32's (README, performance);
# float16 is for GPUs. "auto" (the CLI's default) is :func:`resolve_precision`'s choice for the device.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


_CPUINFO = Path("/proc/cpuinfo")
# Device files of a GPU torch could use (NVIDIA's driver, ROCm, WSL): where none exists, "auto" decides
# for the CPU without importing torch, so a cached rerun stays as light as with an explicit precision.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX): without those
    instructions torch emulates bfloat16 and it is slower than float32. Linux: the kernel's CPU flags
    (no torch import); elsewhere torch's own probes."""
    try:
        flags = set(_CPUINFO.read_text(encoding="ascii", errors="replace").split())
    except OSError:
        import torch

        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(probe()) for probe in probes if probe is not None)
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _auto_device() -> str:
    """The device "auto" decides for: the CPU on a Linux machine with no GPU device file, else torch's answer."""
    if _CPUINFO.exists() and not any(Path(f).exists() for f in GPU_DEVICE_FILES):
        return "cpu"
    return _default_device()


def resolve_precision(precision: str, device: str | None = None) -> str:
    """The precision an encoder runs in: ``precision`` itself, or for "auto" bfloat16 where the
    hardware computes it natively (a CPU with AVX512-BF16 or AMX; a GPU that supports it, else
    float16) and float32 elsewhere. Checked as :func:`check_precision` checks."""
    precision = check_precision(precision, device)
    if precision != "auto":
        return precision
    device = str(device or _auto_device())
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "cpu" and native_bfloat16():
        return "bfloat16"
    return "float32"


def check_precision(precision: str, device: str | None = None) -> str:
    if precision not in PRECISIONS:
        raise StageError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if precision == "float16" and (device or _default_device()) == "cpu":
        raise StageError("precision float16 needs a GPU (CPU kernels for it are slow or missing); on CPU use bfloat16")
    return precision


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model(name_or_path: str) -> Path | None:
    """The local path of a model, None for a hub name; a path-like name that does not exist is bad input.

    Cheap (no imports), so ``mine`` checks its model before running any stage.
    """
    name_or_path = str(name_or_path)
    local = Path(name_or_path).expanduser()
    if local.exists():
        return local
    # a hub name is "model" or "org/model"; anything else is meant as a local path
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise BadInputError(name_or_path, "model path does not exist", field="model")
    return None


# How load_model loads a model: "auto" runs the plain Transformer → Pooling [→ Normalize] layout without
# sentence-transformers (negmine/encoder.py: negmine/bert.py for plain BERT checkpoints, transformers'
# AutoModel for others; byte-identical embeddings, a smaller process) and anything else through
# sentence-transformers; the other two force one loader.
LOADERS = ("auto", "transformers", "sentence-transformers")


def load_model(
    name_or_path: str, max_seq_length: int | None = None, device: str | None = None, precision: str = "float32",
    loader: str = "auto",
):
    """Load a sentence-transformers model by hub name or local path (offline works with a path),
    its weights in ``precision`` (:data:`PRECISIONS`; "auto" as :func:`resolve_precision` chooses), with
    ``loader`` (:data:`LOADERS`)."""
    local = check_model(name_or_path)
    precision = resolve_precision(precision, device)
    if loader not in LOADERS:
        raise StageError(f"unknown loader {loader!r}; choose from {list(LOADERS)}")
    if local is not None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub lookups (they hang offline)
    source = str(local) if local is not None else str(name_or_path)
    import torch

    dtype = getattr(torch, precision)
    model = None
    if loader != "sentence-transformers":
        from negmine.encoder import PlainEncoder, plain_layout

        layout = plain_layout(source)
        if layout is None and loader == "transformers":
            raise BadInputError(name_or_path, "not a plain Transformer → Pooling [→ Normalize] model; load it with sentence-transformers", field="model")
        if layout is not None:
            try:
                model = PlainEncoder(source, layout, device=device, dtype=None if precision == "float32" else dtype)
            except (OSError, ValueError) as exc:
                raise BadInputError(name_or_path, f"could not load the model ({exc})", field="model") from None
    if model is None:
        model = _load_sentence_transformer(name_or_path, source, device, dtype)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    if precision != "float32":
        model.to(dtype)  # modules after the transformer (pooling, dense) too
        _pad_to_multiple(model, LOW_PRECISION_PAD)
        release_memory()  # the float32 pages the conversion read
    return model


def encoder_kind(model) -> str:
    """Which code runs a loaded model: "negmine-bert" (negmine/bert.py), "transformers" (AutoModel behind
    negmine's pooling) or "sentence-transformers"."""
    from negmine.encoder import PlainEncoder

    if isinstance(model, PlainEncoder):
        return "negmine-bert" if model.own_bert else "transformers"
    return "sentence-transformers"


def _load_sentence_transformer(name_or_path: str, source: str, device: str | None, dtype):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise StageError("the dense stage needs sentence-transformers: pip install sentence-transformers") from None
    import torch

    options = {} if dtype == torch.float32 else {"model_kwargs": {"dtype": dtype}}  # no float32 copy on the way
    try:
        return SentenceTransformer(source, device=device, **options)
    except (OSError, ValueError) as exc:
        raise BadInputError(name_or_path, f"could not load a sentence-transformers model ({exc})", field="model") from None


# In bfloat16 (not float32) RSS grows with every new (batch, length) shape the CPU kernels see: oneDNN
# keeps what it built for each. Padding lengths to a multiple of 16 bounds the shapes: encoding 3,500
# SciFact documents peaked at 778 MB instead of 864, and ran 35 instead of 33 documents/s.
LOW_PRECISION_PAD = 16


def _pad_to_multiple(model, multiple: int) -> None:
    from negmine.encoder import PlainEncoder

    if isinstance(model, PlainEncoder):
        model.tokenizer_kwargs["pad_to_multiple_of"] = multiple
        return
    for module in model:
        kwargs = getattr(module, "processing_kwargs", None)
        if isinstance(kwargs, dict):
            kwargs.setdefault("text", {})["pad_to_multiple_of"] = multiple


# On CPU a batch of 64 × 256 tokens is slower than four of 16 × 256 and holds four times the
# activations (attention alone: batch × heads × length² floats): corpus batches are capped at this
# many padded tokens there (bench/encode_efficiency.py and the README's performance section).
# 2,048 (8 × 256) encodes as fast as 4,096 and peaks lower (bench/encode_memory.py: 764 vs 876 MB with malloc_trim).
CPU_BATCH_TOKENS = 2048


# glibc keeps the activations of a freed batch in its heaps (RSS grows with every new batch shape);
# malloc_trim hands them back after every CPU batch
release_memory = malloc_trim


def encode(model, texts: list[str], batch_size: int = 64, prompt_name: str | None = None) -> np.ndarray:
    """Normalised float32 embeddings, ``batch_size`` texts per forward pass at most.

    Texts are sorted by token length (longest first) so a batch holds texts of similar length and
    little padding; on CPU a batch also holds at most :data:`CPU_BATCH_TOKENS` padded tokens.
    """
    import torch

    budget = CPU_BATCH_TOKENS if _on_cpu(model) else None
    with torch.inference_mode():
        if budget is None or len(texts) <= 1:
            return _st_encode(model, texts, batch_size, prompt_name)
        out = None
        for batch in token_batches(token_lengths(model, texts, prompt_name), batch_size, budget):
            part = _st_encode(model, [texts[i] for i in batch], len(batch), prompt_name)
            release_memory()
            if out is None:
                out = np.empty((len(texts), part.shape[1]), dtype=np.float32)
            out[batch] = part
    return out


def _st_encode(model, texts: list[str], batch_size: int, prompt_name: str | None) -> np.ndarray:
    import torch

    if _weights_dtype(model) in (None, torch.float32):
        emb = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            prompt_name=prompt_name,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)
    # lower precision: normalise in float32 (a bfloat16 norm is off by up to 1e-2)
    emb = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False, prompt_name=prompt_name)
    return np.ascontiguousarray(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy(), dtype=np.float32)


def _weights_dtype(model):
    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration, TypeError):
        return None


def _on_cpu(model) -> bool:
    device = getattr(model, "device", None)
    return getattr(device, "type", "cpu") == "cpu"


def token_lengths(model, texts: list[str], prompt_name: str | None = None) -> list[int]:
    """Each text's length in tokens as the model will see it (prompt and special tokens included, truncated)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:  # a model without a tokenizer we can call: ~4 characters per token
        return [len(t) // 4 + 2 for t in texts]
    prompt = (getattr(model, "prompts", None) or {}).get(prompt_name, "") if prompt_name else ""
    limit = getattr(model, "max_seq_length", None)
    lengths: list[int] = []
    # slices keep the token-id lists (Python ints) that the tokenizer returns small and short-lived
    for start in range(0, len(texts), 512):
        encoded = tokenizer(
            [prompt + t for t in texts[start : start + 512]], truncation=limit is not None, max_length=limit,
            add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False,
        )
        lengths.extend(len(ids) for ids in encoded["input_ids"])
    return lengths


def token_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Positions grouped into batches, longest texts first (ties by position): each batch holds at most
    ``batch_size`` texts and at most ``max_tokens`` padded tokens (count × its longest), never fewer than one text."""
    if batch_size < 1 or max_tokens < 1:
        raise StageError(f"batch size and token budget must be at least 1, got {batch_size} and {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[current[0]] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def embedding_dim(model) -> int:
    dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(dim_of())


def _check_chunk_size(size: int) -> None:
    if size < 1:
        raise StageError(f"chunk size must be at least 1, got {size}")


def chunks(items, size: int) -> list:
    """Consecutive slices of ``size`` items (of a list, or rows of a table: zero-copy): the units one :func:`encode` call (or one Ray task) handles."""
    _check_chunk_size(size)
    return [items[start : start + size] for start in range(0, len(items), size)]


def corpus_slices(corpus: "pa.Table | LazyTable", size: int) -> Iterable[pa.Table]:
    """:func:`chunks` of a table, or the same slices read one at a time from a :class:`~negmine.io.LazyTable`
    (the size checked now, not when the first slice is read)."""
    _check_chunk_size(size)
    return table_slices(corpus, size)


def embed_corpus(
    corpus: "pa.Table | LazyTable",
    model,
    path: str | Path,
    dtype: str = "float16",
    batch_size: int = 64,
    chunk_size: int = 8192,
    progress: Callable[[int], None] | None = None,
    parts_dir: str | Path | None = None,
    resumed: dict | None = None,
) -> np.ndarray:
    """Encode the corpus in chunks into a memory-mapped ``.npy`` (row i = corpus row i); written atomically.

    ``corpus`` is a table or a :class:`~negmine.io.LazyTable` (the embed stage's: the file read a chunk at a
    time); both give the same chunks, so the same bytes.

    With ``parts_dir``, each encoded chunk is also kept there (``000000.npy``…, each written atomically)
    until the whole file is written, and chunks already there are read instead of encoded: an
    interrupted encode resumes where it stopped, with the same bytes as an uninterrupted one (a chunk's
    embeddings depend only on its own texts). The caller names ``parts_dir`` after everything that
    decides the embeddings (model, settings, corpus). ``resumed`` (a dict) receives how many
    documents came from there (``resumed["documents"]``).
    """
    # zero-copy slices of the table, or slices read from the file one at a time (a LazyTable): a chunk's
    # texts exist only while it is encoded (a corpus's worth of Python strings would not fit a bounded working set)
    slices = corpus_slices(corpus, chunk_size)
    if parts_dir is None:
        parts = (encode(model, doc_texts(chunk), batch_size) for chunk in slices)
    else:
        parts = _resumable_parts(model, slices, batch_size, Path(parts_dir), dtype, resumed if resumed is not None else {})
    emb = write_embeddings(path, parts, corpus.num_rows, embedding_dim(model), dtype, progress)
    if parts_dir is not None:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return emb


def _resumable_parts(model, slices: Iterable[pa.Table], batch_size: int, parts_dir: Path, dtype: str, resumed: dict):
    # runs only once write_embeddings has checked dtype (the generator starts when it is first read)
    resumed["documents"] = 0
    for i, chunk in enumerate(slices):
        block = kept_part(parts_dir, i, chunk.num_rows)
        if block is not None:
            resumed["documents"] += chunk.num_rows
            yield block
            continue
        block = encode(model, doc_texts(chunk), batch_size).astype(DTYPES[dtype])
        save_part(parts_dir, i, block)
        yield block


def kept_part(parts_dir: Path, i: int, rows: int, mmap: bool = False) -> np.ndarray | None:
    """Chunk ``i``'s embeddings kept in ``parts_dir`` by an interrupted encode, if it is there whole
    (``mmap``: memory-mapped, read only when used)."""
    part = parts_dir / f"{i:06d}.npy"
    if part.exists():
        block = np.load(part, mmap_mode="r" if mmap else None)
        if block.shape[0] == rows:
            return block
    return None


def save_part(parts_dir: Path, i: int, block: np.ndarray) -> None:
    with atomic_path(parts_dir / f"{i:06d}.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, block)


def write_embeddings(
    path: str | Path,
    parts: Iterable[np.ndarray],
    rows: int,
    dim: int,
    dtype: str = "float16",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Write consecutive blocks of embeddings (corpus order) into a memory-mapped ``.npy``, atomically."""
    if dtype not in DTYPES:
        raise StageError(f"unknown embedding dtype {dtype!r}; choose from {sorted(DTYPES)}")
    from tqdm.auto import tqdm

    bar = tqdm(total=rows, unit="doc", desc="encode corpus", disable=None, leave=False)
    # the .npy header, then each block appended as it comes: written pages are the page cache's, not
    # this process's (a writable memory map would hold the whole matrix in its RSS by the end)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(DTYPES[dtype])), "fortran_order": False, "shape": (rows, dim)})
        start = 0
        for block in parts:
            if block.ndim != 2 or block.shape[1] != dim:
                raise StageError(f"an encoded block has shape {block.shape}, expected (rows, {dim})")
            fh.write(np.ascontiguousarray(block, dtype=DTYPES[dtype]).tobytes())
            start += len(block)
            bar.update(len(block))
            if progress:
                progress(len(block))
        bar.close()
        if start != rows:
            raise StageError(f"encoded {start} documents, expected {rows}")
    return np.load(path, mmap_mode="r")


def _flat_index(embeddings: np.ndarray, chunk_size: int = 65536):
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
    (tested) — without the index's own copy of the rows (96 MB for a shard of 65,536 × 384)."""

    def __init__(self, embeddings: np.ndarray):
        self.vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        drop_mapped_pages(embeddings)
        self.ntotal = len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        return faiss.knn(queries, self.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)


def shard_searcher(embeddings: np.ndarray):
    """What searches one shard exactly: :class:`ExactSearch` on CPU, a flat index where faiss has GPUs."""
    import faiss

    return _flat_index(embeddings) if faiss.get_num_gpus() > 0 else ExactSearch(embeddings)


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
    one (``pread``): indexing the map instead faults in the pages around each row, and a thousand rows
    scattered over a 1,000,000 × 384 float16 file left 300 MB of it resident. Where the rows are a good
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
        return _flat_index(embeddings, chunk_size)
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
    would cost ~60 MB per million documents)."""
    found = rows >= 0
    names = iter(ids.take(pa.array(rows[found])).to_pylist())
    return [[(next(names), float(s)) for ok, s in zip(row_ok, row_s) if ok] for row_ok, row_s in zip(found, scores)]


def check_embeddings(corpus: pa.Table, corpus_embeddings: np.ndarray) -> None:
    if corpus_embeddings.shape[0] != corpus.num_rows:
        raise StageError(
            f"corpus embeddings have {corpus_embeddings.shape[0]} rows but the corpus has {corpus.num_rows}; rerun the embed stage"
        )


# Corpus rows per exact-search shard: a multiple of faiss's 1,024-row BLAS block, so every score is
# computed by the same BLAS call as in one index over the whole corpus (same floats); 65,536 rows of
# 384 dimensions are a 96 MB float32 index, whatever the corpus size. On a 1M × 384 corpus and 1,000
# queries, shards of 32,768 / 65,536 / 131,072 / 262,144 rows searched in about the same time
# (14–16 s, the stage's run-to-run spread) and peaked at 677 / 668 / 837 / 1,018 MB.
SHARD_SIZE = 1 << 16


def sharded_top_k(embeddings: np.ndarray, query_batches: list[np.ndarray], k: int, shard_size: int = SHARD_SIZE) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`top_k` of each query batch over all of ``embeddings`` by exact inner product, one flat index
    of ``shard_size`` rows at a time (:func:`shard_searcher`), merged (:func:`merge_top_k`): the same scores,
    rows and order as one index over every row, with at most one shard's float32 copy in memory."""
    if shard_size < 1:
        raise StageError(f"shard size must be at least 1, got {shard_size}")
    n = embeddings.shape[0]
    if n == 0:
        return [top_k(_flat_index(embeddings), emb, k) for emb in query_batches]
    per_batch: list[list] = [[] for _ in query_batches]
    for start in range(0, n, shard_size):
        shard = shard_searcher(embeddings[start : start + shard_size])
        for found, emb in zip(per_batch, query_batches):
            scores, rows = top_k(shard, emb, k)
            found.append((scores, rows + start))
        del shard
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
        for texts in chunks(queries.column("text").to_pylist(), query_batch):
            query_emb.append(encode(model, texts, batch_size))
        for emb, (scores, rows) in zip(query_emb, sharded_top_k(corpus_embeddings, query_emb, k, shard_size)):
            hits.extend(ranked_hits(scores, rows, ids))
            if progress:
                progress(len(emb))
        return dense_tables(corpus, queries, qrels, corpus_embeddings, query_emb, hits)
    searcher = build_index(corpus_embeddings, index, **(index_params or {}))
    for texts in chunks(queries.column("text").to_pylist(), query_batch):
        emb = encode(model, texts, batch_size)
        hits.extend(ranked_hits(*top_k(searcher, emb, k), ids))
        query_emb.append(emb)
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
