"""Stage 3 — dense candidates: sentence-transformers bi-encoder + faiss inner-product search.

Embeddings are L2-normalised, so inner product is cosine similarity: s(q, d) = ⟨E(q), E(d)⟩ ∈ [−1, 1].
The corpus is encoded in chunks straight into a memory-mapped ``.npy`` file (float16 or float32)
in the run directory, so a rerun with the same model and corpus does not re-encode. Search is
exact (``IndexFlatIP``) in query batches, on GPU when ``faiss.get_num_gpus() > 0``. Every labelled
positive is scored too, so s(q, d+) is known even when retrieval missed it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from negmine.candidates import candidates_table, doc_texts, positive_scores_table
from negmine.errors import BadInputError, StageError
from negmine.io import atomic_path

DTYPES = {"float16": np.float16, "float32": np.float32}


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


def load_model(name_or_path: str, max_seq_length: int | None = None, device: str | None = None):
    """Load a sentence-transformers model by hub name or local path (offline works with a path)."""
    local = check_model(name_or_path)
    if local is not None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub lookups (they hang offline)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise StageError("the dense stage needs sentence-transformers: pip install sentence-transformers") from None
    try:
        model = SentenceTransformer(str(local) if local is not None else str(name_or_path), device=device)
    except (OSError, ValueError) as exc:
        raise BadInputError(name_or_path, f"could not load a sentence-transformers model ({exc})", field="model") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def encode(model, texts: list[str], batch_size: int = 64, prompt_name: str | None = None) -> np.ndarray:
    """Normalised float32 embeddings. sentence-transformers sorts texts by length to cut padding."""
    import torch

    with torch.inference_mode():
        emb = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            prompt_name=prompt_name,
        )
    return np.ascontiguousarray(emb, dtype=np.float32)


def embed_corpus(
    corpus: pa.Table,
    model,
    path: str | Path,
    dtype: str = "float16",
    batch_size: int = 64,
    chunk_size: int = 8192,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Encode the corpus in chunks into a memory-mapped ``.npy`` (row i = corpus row i); written atomically."""
    if dtype not in DTYPES:
        raise StageError(f"unknown embedding dtype {dtype!r}; choose from {sorted(DTYPES)}")
    from tqdm.auto import tqdm

    texts = doc_texts(corpus)
    bar = tqdm(total=len(texts), unit="doc", desc="encode corpus", disable=None, leave=False)
    dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = dim_of()
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPES[dtype], shape=(len(texts), dim))
        for start in range(0, len(texts), chunk_size):
            chunk = texts[start : start + chunk_size]
            out[start : start + len(chunk)] = encode(model, chunk, batch_size)
            bar.update(len(chunk))
            if progress:
                progress(len(chunk))
        bar.close()
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


def _flat_index(embeddings: np.ndarray, chunk_size: int = 65536):
    import faiss

    index = faiss.IndexFlatIP(embeddings.shape[1])
    if faiss.get_num_gpus() > 0:  # pragma: no cover - no GPU on CI
        index = faiss.index_cpu_to_all_gpus(index)
    for start in range(0, embeddings.shape[0], chunk_size):
        index.add(np.ascontiguousarray(embeddings[start : start + chunk_size], dtype=np.float32))
    return index


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
) -> tuple[pa.Table, pa.Table]:
    """Top-``k`` candidates per query by inner product, and s(q, d+) of every labelled positive.

    Returns ``(candidates, positive_scores)`` with ``source = 'dense'``.
    """
    import faiss

    if corpus_embeddings.shape[0] != corpus.num_rows:
        raise StageError(
            f"corpus embeddings have {corpus_embeddings.shape[0]} rows but the corpus has {corpus.num_rows}; rerun the embed stage"
        )
    if threads:
        faiss.omp_set_num_threads(threads)
    ids = corpus.column("doc_id").to_pylist()
    qids = queries.column("query_id").to_pylist()
    texts = queries.column("text").to_pylist()
    index = _flat_index(corpus_embeddings)
    k_eff = min(k, len(ids))
    hits, query_emb = [], []
    for start in range(0, len(qids), query_batch):
        emb = encode(model, texts[start : start + query_batch], batch_size)
        scores, rows = index.search(emb, k_eff)
        hits.extend([(ids[r], float(s)) for r, s in zip(row_r, row_s) if r >= 0] for row_r, row_s in zip(rows, scores))
        query_emb.append(emb)
        if progress:
            progress(len(emb))
    candidates = candidates_table(qids, hits, "dense")
    query_emb = np.concatenate(query_emb) if query_emb else np.zeros((0, corpus_embeddings.shape[1]), np.float32)
    row_of_query = {q: i for i, q in enumerate(qids)}
    row_of_doc = {d: i for i, d in enumerate(ids)}

    def score_missing(pairs):
        q = query_emb[[row_of_query[p[0]] for p in pairs]]
        d = np.asarray(corpus_embeddings[[row_of_doc[p[1]] for p in pairs]], dtype=np.float32)
        return np.einsum("ij,ij->i", q, d).tolist()

    return candidates, positive_scores_table(candidates, qrels, qids, "dense", score_missing)
