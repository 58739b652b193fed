"""The corpus embeddings file: encoded in chunks into a memory-mapped ``.npy``, resumable by chunk.

The corpus is encoded in chunks straight into a ``.npy`` file (float16 or float32) in the run
directory, so a rerun with the same model and corpus does not re-encode. A transformer's floats
depend on which texts share a padded batch, so the chunk size is part of what the file depends on.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa

from negmine.errors import BadInputError, StageError
from negmine.io import LazyTable, atomic_path, table_slices
from negmine.progress import track
from negmine.retrieve.candidates import doc_texts
from negmine.retrieve.encode import check_chunk_size, embedding_dim, encode

EMBED_CHUNK = 1024  # documents per encode call (the unit of work an engine hands out)

DTYPES = {"float16": np.float16, "float32": np.float32}


def corpus_slices(corpus: "pa.Table | LazyTable", size: int) -> Iterable[pa.Table]:
    """:func:`chunks` of a table, or the same slices read one at a time from a :class:`~negmine.io.LazyTable`
    (the size checked now, not when the first slice is read)."""
    check_chunk_size(size)
    return table_slices(corpus, size)


def embed_corpus(
    corpus: "pa.Table | LazyTable",
    model,
    path: str | Path,
    dtype: str = "float16",
    batch_size: int = 64,
    chunk_size: int = EMBED_CHUNK,
    progress: Callable[[int], None] | None = None,
    parts_dir: str | Path | None = None,
    resumed: dict | None = None,
    prompt: str | None = None,
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
    with track(corpus.num_rows, "docs") as bar:
        on_batch = bar.advance if bar.active else None  # the documents of each batch as it is encoded
        if parts_dir is None:
            parts = (_encode(model, doc_texts(chunk), batch_size, on_batch, prompt) for chunk in slices)
        else:
            parts = _resumable_parts(model, slices, batch_size, Path(parts_dir), dtype, resumed if resumed is not None else {}, on_batch, prompt)
        emb = write_embeddings(path, parts, corpus.num_rows, embedding_dim(model), dtype, progress, tracker=bar)
    if parts_dir is not None:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return emb


def _encode(model, texts: list[str], batch_size: int, on_batch, prompt: str | None) -> np.ndarray:
    """:func:`encode`, counting each batch only when progress is shown."""
    counting = {} if on_batch is None else {"on_batch": on_batch}
    return encode(model, texts, batch_size, prompt=prompt, **counting)


def _resumable_parts(model, slices: Iterable[pa.Table], batch_size: int, parts_dir: Path, dtype: str, resumed: dict, on_batch=None,
                     prompt: str | None = None):
    # runs only once write_embeddings has checked dtype (the generator starts when it is first read)
    resumed["documents"] = 0
    for i, chunk in enumerate(slices):
        block = kept_part(parts_dir, i, chunk.num_rows)
        if block is not None:
            resumed["documents"] += chunk.num_rows
            yield block
            continue
        block = _encode(model, doc_texts(chunk), batch_size, on_batch, prompt).astype(DTYPES[dtype])
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
    # header and bytes through the file object: a short write (disk full, file too large) raises the
    # OS error itself, which names the cause, where numpy's ndarray.tofile reports only the byte counts
    block = np.ascontiguousarray(block)
    with atomic_path(parts_dir / f"{i:06d}.npy") as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(block))
        fh.write(block.tobytes())


def write_embeddings(
    path: str | Path,
    parts: Iterable[np.ndarray],
    rows: int,
    dim: int,
    dtype: str = "float16",
    progress: Callable[[int], None] | None = None,
    tracker=None,
) -> np.ndarray:
    """Write consecutive blocks of embeddings (corpus order) into a memory-mapped ``.npy``, atomically.

    ``progress(n)`` is called after every block of ``n`` rows written; the documents written are shown
    as the stage's progress (negmine.progress), on ``tracker`` when given."""
    if dtype not in DTYPES:
        raise BadInputError("--dtype", f"unknown value {dtype!r}; choose from {sorted(DTYPES)}")
    with contextlib.nullcontext(tracker) if tracker is not None else track(rows, "docs") as bar:
        return _write_blocks(path, parts, rows, dim, dtype, progress, bar)


def _write_blocks(path, parts, rows: int, dim: int, dtype: str, progress, bar) -> np.ndarray:
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
            bar.update_to(start)
            if progress:
                progress(len(block))
        if start != rows:
            raise StageError(f"encoded {start} documents, expected {rows}")
    return np.load(path, mmap_mode="r")
