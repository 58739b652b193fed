"""Prompts (e5's "query: " / "passage: ", bge's instruction, a model's configured prompts): applied by
default where a model declares them, given by text or by name, part of every cache key."""

import json
from pathlib import Path

import numpy as np
import pytest

from negmine.errors import BadInputError
from negmine.retrieve.candidates import doc_texts
from negmine.retrieve.encode import encode
from negmine.retrieve.models import load_model, resolve_prompt
from negmine.rundir import Run
from negmine.runners import cluster_stage, dense_stage, ingest_stage

from conftest import SAMPLE, invoke

PROMPTS = {"query": "query: ", "passage": "passage: ", "classification": "classify: "}


@pytest.fixture(scope="module")
def prompted_model(model_path, tmp_path_factory) -> str:
    """The MiniLM weights with prompts declared in its sentence-transformers config, as e5-style models ship."""
    src, where = Path(model_path), tmp_path_factory.mktemp("prompted") / "model"
    where.mkdir()
    for item in src.iterdir():
        if item.name != "config_sentence_transformers.json":
            (where / item.name).symlink_to(item)
    config = json.loads((src / "config_sentence_transformers.json").read_text())
    (where / "config_sentence_transformers.json").write_text(json.dumps({**config, "prompts": PROMPTS}))
    return str(where)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    run = Run.open(tmp_path_factory.mktemp("prompts") / "run")
    ingest_stage(run, SAMPLE)
    return run


def test_the_models_own_prompts_are_the_default_for_each_role(prompted_model, model_path):
    assert resolve_prompt(prompted_model, "query") == "query: "
    assert resolve_prompt(prompted_model, "document") == "passage: "  # document, then passage, then corpus
    assert resolve_prompt(prompted_model, "query", prompt_name="classification") == "classify: "
    assert resolve_prompt(prompted_model, "query", prompt="Represent: ") == "Represent: "
    assert resolve_prompt(model_path, "query") == resolve_prompt(model_path, "document") == ""  # MiniLM declares none
    with pytest.raises(BadInputError, match=r"--query-prompt-name.*no prompt 'nope'; its prompts are \['classification', 'passage', 'query'\]"):
        resolve_prompt(prompted_model, "query", prompt_name="nope")
    with pytest.raises(BadInputError, match="--corpus-prompt or --corpus-prompt-name, not both"):
        resolve_prompt(prompted_model, "document", prompt="x", prompt_name="passage")


def test_a_model_with_declared_prompts_is_encoded_with_them_by_default(ingested, prompted_model):
    results = dense_stage(ingested, prompted_model, k=10, max_seq_length=64, precision="float32")
    embed, dense = (r.entry["stats"] for r in results)
    assert embed["corpus_prompt"] == "passage: " and dense["query_prompt"] == "query: "
    assert ingested.manifest["stages"]["embed"]["config"]["corpus_prompt"] == "passage: "
    stored = np.load(ingested.file("embeddings/corpus.npy")).astype(np.float32)
    texts = doc_texts(ingested_corpus(ingested))
    model = load_model(prompted_model, 64, backend=embed["backend"])  # the backend auto chose here
    with_prompt = encode(model, texts[:8], 64, prompt="passage: ").astype(np.float16).astype(np.float32)
    without = encode(model, texts[:8], 64).astype(np.float16).astype(np.float32)
    assert np.array_equal(stored[:8], with_prompt) and not np.array_equal(stored[:8], without)


def ingested_corpus(run):
    import pyarrow.parquet as pq

    return pq.read_table(run.file("corpus.parquet"))


def test_changing_a_prompt_reruns_what_it_encodes_and_only_that(ingested, prompted_model):
    settings = {"k": 10, "max_seq_length": 64, "precision": "float32"}
    dense_stage(ingested, prompted_model, **settings)
    assert [r.skipped for r in dense_stage(ingested, prompted_model, **settings)] == [True, True]
    query_changed = dense_stage(ingested, prompted_model, query_prompt="search_query: ", **settings)
    assert [r.skipped for r in query_changed] == [True, False]  # the corpus was encoded with the same prompt
    corpus_changed = dense_stage(ingested, prompted_model, query_prompt="search_query: ", corpus_prompt="search_document: ", **settings)
    assert [r.skipped for r in corpus_changed] == [False, False]
    clustered = cluster_stage(ingested, prompted_model, max_seq_length=64)
    assert ingested.manifest["stages"]["cluster"]["config"]["query_prompt"] == "query: " and not clustered.skipped
    assert cluster_stage(ingested, prompted_model, max_seq_length=64, query_prompt="query: ").skipped  # the same text, given


def test_an_unknown_prompt_name_is_refused_before_any_stage(tmp_path, prompted_model):
    out = tmp_path / "run"
    result = invoke("mine", "--data", SAMPLE, "--out", out, "--model", prompted_model, "--query-prompt-name", "nope")
    assert result.exit_code == 2 and "--query-prompt-name" in result.stderr
    assert not out.exists() or not list(out.glob("*.parquet"))
