"""Encoding texts into normalised float32 embeddings: length-sorted batches, a padded-token budget on CPU."""

from __future__ import annotations

from typing import Callable

import numpy as np

from negmine.errors import StageError
from negmine.io import malloc_trim
from negmine.retrieve.encoder import Tokenized, prompt_text

# On CPU a larger batch does not encode faster once its matrix multiplies keep the cores busy, but its
# activations grow with it (attention alone: batch × heads × length² floats): corpus batches are capped at this
# many padded tokens there, 8 texts of 256 tokens. bench/encode_memory.py measures peak RSS and speed for each
# budget, bench/encode_efficiency.py the throughput against a bare torch forward pass.
CPU_BATCH_TOKENS = 2048


# glibc keeps the activations of a freed batch in its heaps (RSS grows with every new batch shape);
# malloc_trim hands them back after every CPU batch
release_memory = malloc_trim


def encode(model, texts: list[str], batch_size: int = 64, prompt_name: str | None = None, prompt: str | None = None,
           on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Normalised float32 embeddings, ``batch_size`` texts per forward pass at most.

    ``prompt`` (a text put before every text, as sentence-transformers' ``encode(prompt=...)``) or
    ``prompt_name`` (one of the model's configured prompts); see negmine.retrieve.models.resolve_prompt.

    Texts are sorted by token length (longest first) so a batch holds texts of similar length and
    little padding; on CPU a batch also holds at most :data:`CPU_BATCH_TOKENS` padded tokens.
    ``on_batch(n)`` is called after every ``n`` texts encoded (per batch on CPU, once on a GPU).
    """
    budget = CPU_BATCH_TOKENS if _on_cpu(model) else None
    if getattr(model, "pipelined", False):  # the OpenVINO encoder (CPU, no torch): tokenised once, batches queued
        tokens = model.tokenize(texts, prompt_text(model.prompts, prompt_name, prompt))
        return model.encode_batches(tokens, token_batches(tokens.lengths.tolist(), batch_size, budget), on_batch)
    import torch

    with torch.inference_mode():
        if budget is None or len(texts) <= 1:
            out = _st_encode(model, texts, batch_size, prompt_name, prompt)
            if on_batch:
                on_batch(len(texts))
            return out
        batches = token_batches(token_lengths(model, texts, prompt_name, prompt), batch_size, budget)
        out = None
        for batch in batches:
            part = _st_encode(model, [texts[i] for i in batch], len(batch), prompt_name, prompt)
            release_memory()
            if on_batch:
                on_batch(len(batch))
            if out is None:
                out = np.empty((len(texts), part.shape[1]), dtype=np.float32)
            out[batch] = part
    return out


def _st_encode(model, texts: list[str], batch_size: int, prompt_name: str | None, prompt: str | None = None) -> np.ndarray:
    import torch

    prompting = {"prompt_name": prompt_name} if prompt is None else {"prompt": prompt}

    if _weights_dtype(model) in (None, torch.float32):
        emb = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            **prompting,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)
    # lower precision: normalise in float32 (a bfloat16 norm is off by up to 1e-2)
    emb = model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False, **prompting)
    return np.ascontiguousarray(torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy(), dtype=np.float32)


def _weights_dtype(model):
    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration, TypeError):
        return None


def _on_cpu(model) -> bool:
    device = getattr(model, "device", None)
    return getattr(device, "type", "cpu") == "cpu"


def token_lengths(model, texts: list[str], prompt_name: str | None = None, prompt: str | None = None) -> list[int]:
    """Each text's length in tokens as the model will see it (prompt and special tokens included, truncated)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:  # a model without a tokenizer we can call: ~4 characters per token
        return [len(t) // 4 + 2 for t in texts]
    prompt = prompt_text(getattr(model, "prompts", None) or {}, prompt_name, prompt)
    return Tokenized(tokenizer, [prompt + t for t in texts], getattr(model, "max_seq_length", None)).lengths.tolist()


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


def check_chunk_size(size: int) -> None:
    if size < 1:
        raise StageError(f"chunk size must be at least 1, got {size}")


def chunks(items, size: int) -> list:
    """Consecutive slices of ``size`` items (of a list, or rows of a table: zero-copy): the units one :func:`encode` call (or one Ray task) handles."""
    check_chunk_size(size)
    return [items[start : start + size] for start in range(0, len(items), size)]
