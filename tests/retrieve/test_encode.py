"""Token-budgeted encoding batches (negmine.retrieve.encode.token_batches / encode)."""

import numpy as np
import pytest

from negmine.retrieve.encode import CPU_BATCH_TOKENS, encode, token_batches, token_lengths
from negmine.retrieve.models import load_model
from negmine.errors import StageError


def test_batches_respect_the_count_and_the_token_budget():
    lengths = [10, 256, 40, 256, 12, 100, 100, 5]
    batches = token_batches(lengths, batch_size=3, max_tokens=300)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 300
    # longest first, ties by position; a text over the budget still gets a batch of its own
    assert batches[:2] == [[1], [3]]
    assert token_batches([500], 8, 100) == [[0]]
    assert batches == token_batches(lengths, 3, 300)  # deterministic


def test_batch_size_alone_binds_for_short_texts():
    assert [len(b) for b in token_batches([8] * 10, batch_size=4, max_tokens=4096)] == [4, 4, 2]
    with pytest.raises(StageError):
        token_batches([1, 2], 0, 10)


def test_budgeted_encoding_matches_one_batch_per_text(model_path, monkeypatch):
    model = load_model(model_path, 128)
    texts = ["short query", "a much longer passage about " + "protein folding and " * 50, "", "mid-length text on gene expression in mice"] * 3
    lengths = token_lengths(model, texts)
    assert max(lengths) == 128 and lengths[0] < 10
    ours = encode(model, texts, batch_size=4)
    singles = np.stack([encode(model, [t], batch_size=1)[0] for t in texts])
    assert ours.shape == (len(texts), 384) and ours.dtype == np.float32
    # padding changes the floats only in their last bits
    np.testing.assert_allclose((ours * singles).sum(1), 1.0, atol=1e-5)
    assert CPU_BATCH_TOKENS >= 128
    import negmine.retrieve.embed
    import negmine.retrieve.encode

    monkeypatch.setattr(negmine.retrieve.encode, "CPU_BATCH_TOKENS", 200)  # the 128-token texts now go one per batch
    assert [len(b) for b in token_batches(lengths, 4, 200)][:3] == [1, 1, 1]
    np.testing.assert_allclose((encode(model, texts, batch_size=4) * singles).sum(1), 1.0, atol=1e-5)
    # freed activations go back to the OS after every CPU batch
    released = []
    monkeypatch.setattr(negmine.retrieve.encode, "release_memory", lambda: released.append(1))
    encode(model, texts, batch_size=4)
    assert len(released) == len(token_batches(lengths, 4, 200))


def test_release_memory_runs():
    from negmine.retrieve.encode import release_memory

    release_memory()  # glibc's malloc_trim here; a no-op elsewhere, never an error


def test_the_embeddings_file_is_npy_written_block_by_block(tmp_path):
    """write_embeddings appends blocks after the header: the bytes np.save / a memory map would give,
    without this process holding the matrix."""
    from negmine.retrieve.embed import write_embeddings

    rng = np.random.default_rng(0)
    for dtype, rows in (("float16", 1000), ("float32", 3), ("float16", 0)):
        matrix = rng.standard_normal((rows, 8)).astype(np.float32)
        out = write_embeddings(tmp_path / f"{dtype}-{rows}.npy", (matrix[i : i + 7] for i in range(0, rows, 7)), rows, 8, dtype)
        np.save(tmp_path / "expected.npy", matrix.astype(dtype))
        assert (tmp_path / f"{dtype}-{rows}.npy").read_bytes() == (tmp_path / "expected.npy").read_bytes()
        assert out.dtype == np.dtype(dtype) and out.shape == (rows, 8)
    with pytest.raises(StageError, match="encoded 7 documents, expected 8"):
        write_embeddings(tmp_path / "short.npy", [np.zeros((7, 8), np.float32)], 8, 8)
    assert not (tmp_path / "short.npy").exists()


def test_a_corpus_encode_holds_one_chunk_of_texts_at_a_time(tmp_path, model_path, monkeypatch):
    import negmine.retrieve.embed
    import negmine.retrieve.encode
    from negmine.ingest import ingest

    from conftest import SAMPLE

    corpus = ingest(SAMPLE).corpus
    seen = []
    real = negmine.retrieve.candidates.doc_texts
    monkeypatch.setattr(negmine.retrieve.embed, "doc_texts", lambda table: seen.append(table.num_rows) or real(table))
    model = load_model(model_path, 32)
    emb = negmine.retrieve.embed.embed_corpus(corpus, model, tmp_path / "corpus.npy", chunk_size=16)
    assert sum(seen) == corpus.num_rows and max(seen) == 16
    assert emb.shape == (corpus.num_rows, 384)


def test_a_corpus_read_lazily_gives_the_same_bytes(tmp_path, model_path):
    """The embed stage reads the corpus file a chunk at a time (negmine.io.LazyTable): same chunks, same file."""
    import negmine.retrieve.embed
    import negmine.retrieve.encode
    from negmine.ingest import ingest
    from negmine.io import LazyTable, write_table
    from negmine.schemas import CORPUS

    from conftest import SAMPLE

    corpus = ingest(SAMPLE).corpus
    write_table(corpus, tmp_path / "corpus.parquet", CORPUS)
    model = load_model(model_path, 32)
    negmine.retrieve.embed.embed_corpus(corpus, model, tmp_path / "table.npy", chunk_size=16)
    negmine.retrieve.embed.embed_corpus(LazyTable(tmp_path / "corpus.parquet", CORPUS), model, tmp_path / "lazy.npy", chunk_size=16, parts_dir=tmp_path / "parts", resumed={})
    assert (tmp_path / "table.npy").read_bytes() == (tmp_path / "lazy.npy").read_bytes()
    with pytest.raises(StageError, match="chunk size must be at least 1"):
        negmine.retrieve.embed.embed_corpus(LazyTable(tmp_path / "corpus.parquet", CORPUS), model, tmp_path / "x.npy", chunk_size=0)
