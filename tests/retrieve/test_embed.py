"""An interrupted corpus encode resumes from its finished chunks, with byte-identical output."""

import pytest

import negmine.retrieve.embed
from negmine.rundir import Run
from negmine.runners.dense import embed_stage
from negmine.runners.ingest import ingest_stage
from conftest import SAMPLE


def test_interrupted_embed_resumes_with_the_same_bytes(tmp_path, model_path, monkeypatch):
    whole = Run.open(tmp_path / "whole")
    ingest_stage(whole, SAMPLE)
    embed_stage(whole, model_path, max_seq_length=64, chunk_size=16)
    expected = whole.file("embeddings/corpus.npy").read_bytes()

    run = Run.open(tmp_path / "run")
    ingest_stage(run, SAMPLE)
    real_encode, calls = negmine.retrieve.encode.encode, []

    def failing(model, texts, batch_size=64, prompt_name=None, prompt=None):
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the fourth chunk
        calls.append(len(texts))
        return real_encode(model, texts, batch_size, prompt_name, prompt)

    monkeypatch.setattr(negmine.retrieve.embed, "encode", failing)
    with pytest.raises(KeyboardInterrupt):
        embed_stage(run, model_path, max_seq_length=64, chunk_size=16)
    embeddings = run.file("embeddings")
    assert not (embeddings / "corpus.npy").exists()
    (parts,) = embeddings.glob(".corpus.parts-*")
    assert sorted(p.name for p in parts.iterdir()) == ["000000.npy", "000001.npy", "000002.npy"]

    calls.clear()
    monkeypatch.setattr(negmine.retrieve.embed, "encode", lambda model, texts, batch_size=64, prompt_name=None, prompt=None: calls.append(len(texts)) or real_encode(model, texts, batch_size, prompt_name, prompt))
    result = embed_stage(run, model_path, max_seq_length=64, chunk_size=16)
    documents = result.entry["stats"]["documents"]
    assert result.entry["stats"]["documents_resumed"] == 48
    assert sum(calls) == documents - 48  # only the chunks not yet encoded
    assert (embeddings / "corpus.npy").read_bytes() == expected
    assert not list(embeddings.glob(".corpus.parts-*"))  # removed once the file is whole


def test_parts_of_another_setting_are_not_reused(tmp_path, model_path, monkeypatch):
    run = Run.open(tmp_path / "run")
    ingest_stage(run, SAMPLE)
    real_encode, calls = negmine.retrieve.encode.encode, []

    def failing(model, texts, batch_size=64, prompt_name=None, prompt=None):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_encode(model, texts, batch_size, prompt_name, prompt)

    monkeypatch.setattr(negmine.retrieve.embed, "encode", failing)
    with pytest.raises(KeyboardInterrupt):
        embed_stage(run, model_path, max_seq_length=64, chunk_size=16)
    monkeypatch.setattr(negmine.retrieve.embed, "encode", real_encode)
    result = embed_stage(run, model_path, max_seq_length=32, chunk_size=16)  # other embeddings: start afresh
    assert "documents_resumed" not in result.entry["stats"]
    assert not list(run.file("embeddings").glob(".corpus.parts-*"))
