"""The plain encoder (transformers alone) against sentence-transformers: same bytes, or a fallback."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from negmine.retrieve.encode import encode
from negmine.retrieve.models import load_model
from negmine.retrieve.encoder import PlainEncoder, fetcher, plain_layout
from negmine.errors import BadInputError
from negmine.ingest import ingest
from negmine.retrieve.candidates import doc_texts

from conftest import SAMPLE


@pytest.fixture(scope="module")
def texts():
    corpus = doc_texts(ingest(SAMPLE).corpus)
    # long and short texts, an empty one, duplicates of a length: batches with padding and ties
    return corpus[:40] + ["", "a", "b", "protein " * 400]


def variant(model_path: str, where: Path, pooling: dict | None = None, st_config: dict | None = None, extra_module=None, config: dict | None = None) -> str:
    """A copy of the model (files linked) with its pooling, prompts, modules or transformer config changed."""
    src = Path(model_path)
    where.mkdir()
    for item in src.iterdir():
        if item.name not in ("1_Pooling", "config_sentence_transformers.json", "modules.json", "config.json"):
            (where / item.name).symlink_to(item)
    (where / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), **(config or {})}))
    (where / "1_Pooling").mkdir()
    pool = json.loads((src / "1_Pooling" / "config.json").read_text())
    (where / "1_Pooling" / "config.json").write_text(json.dumps({**pool, **(pooling or {})}))
    st = json.loads((src / "config_sentence_transformers.json").read_text())
    (where / "config_sentence_transformers.json").write_text(json.dumps({**st, **(st_config or {})}))
    modules = json.loads((src / "modules.json").read_text())
    if extra_module:
        modules.append(extra_module)
    (where / "modules.json").write_text(json.dumps(modules))
    return str(where)


def both(path: str, texts: list[str], precision: str = "float32", prompt_name: str | None = None, own_bert: bool = True):
    plain = load_model(path, 128, precision=precision)
    assert plain.own_bert is own_bert  # negmine/bert.py, or transformers' AutoModel
    st = load_model(path, 128, precision=precision, loader="sentence-transformers")
    assert isinstance(plain, PlainEncoder) and type(st).__name__ == "SentenceTransformer"
    return encode(plain, texts, 8, prompt_name), encode(st, texts, 8, prompt_name)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_plain_encoder_matches_sentence_transformers_byte_for_byte(model_path, texts, precision):
    ours, theirs = both(model_path, texts, precision)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    assert ours.tobytes() == theirs.tobytes()
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_cls_pooling_and_prompts_match_too(tmp_path, model_path, texts):
    path = variant(
        model_path, tmp_path / "cls",
        pooling={"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
        st_config={"prompts": {"query": "query: "}},
    )
    assert plain_layout(path)["pooling"] == "cls"
    ours, theirs = both(path, texts[:12], prompt_name="query")
    assert ours.tobytes() == theirs.tobytes()
    assert ours.tobytes() != both(path, texts[:12])[0].tobytes()  # the prompt was applied


def test_a_prompt_given_as_text_matches_sentence_transformers_too(model_path, texts):
    plain = load_model(model_path, 128)
    st = load_model(model_path, 128, loader="sentence-transformers")
    ours, theirs = encode(plain, texts[:12], 8, prompt="Represent this passage: "), encode(st, texts[:12], 8, prompt="Represent this passage: ")
    assert ours.tobytes() == theirs.tobytes()
    assert ours.tobytes() != encode(plain, texts[:12], 8).tobytes()


def test_a_bert_variant_negmine_does_not_run_goes_to_transformers(tmp_path, model_path, texts):
    path = variant(model_path, tmp_path / "gelu-new", config={"hidden_act": "gelu_new"})
    ours, theirs = both(path, texts[:10], own_bert=False)
    assert ours.tobytes() == theirs.tobytes()


def test_a_model_saved_by_sentence_transformers_6_is_plain(tmp_path, model_path, texts):
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(model_path, device="cpu").save(str(tmp_path / "saved"))
    layout = {k: v for k, v in plain_layout(str(tmp_path / "saved")).items() if k not in ("fetch", "model_config")}
    assert layout == {"pooling": "mean", "normalize": True, "max_seq_length": None, "dimension": 384, "prompts": {"document": "", "query": ""}}
    model = load_model(str(tmp_path / "saved"))
    assert model.max_seq_length == 256  # from the tokenizer, as sentence-transformers reads it
    ours, theirs = both(str(tmp_path / "saved"), texts[:10])
    assert ours.tobytes() == theirs.tobytes()


@pytest.mark.parametrize(
    "change",
    [
        {"extra_module": {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}},
        {"pooling": {"pooling_mode_weightedmean_tokens": True, "pooling_mode_mean_tokens": False}},
        {"pooling": {"include_prompt": False}},
        {"st_config": {"default_prompt_name": "query", "prompts": {"query": "q: "}}},
    ],
    ids=["dense-module", "weightedmean", "prompt-excluded", "default-prompt"],
)
def test_other_layouts_go_to_sentence_transformers(tmp_path, model_path, change):
    path = variant(model_path, tmp_path / "other", **change)
    assert plain_layout(path) is None
    if "extra_module" not in change:  # (the Dense module's weights do not exist in this copy)
        assert type(load_model(path, 64)).__name__ == "SentenceTransformer"
    with pytest.raises(BadInputError, match="not a plain Transformer"):
        load_model(path, 64, loader="transformers")


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_dense_run_does_not_import_sentence_transformers(tmp_path, model_path, backend):
    """Nor transformers (once the tokenizer is saved), nor, on OpenVINO, torch (once the graph is exported)."""
    from negmine.retrieve.backends import openvino_installed
    from negmine.retrieve.tokenizer import load_tokenizer

    load_tokenizer(model_path, fetcher(model_path), 64, 512)

    openvino = backend == "auto" and openvino_installed()
    if openvino:
        from negmine.retrieve.openvino_encoder import exported_graph

        layout = plain_layout(model_path)
        exported_graph(layout["fetch"]("model.safetensors"), layout["model_config"])
    code = (
        "import sys; from negmine.rundir import Run; from negmine.runners.ingest import ingest_stage; from negmine.runners.dense import dense_stage\n"
        f"run = Run.open({str(tmp_path / 'run')!r}); ingest_stage(run, {str(SAMPLE)!r})\n"
        f"dense_stage(run, {model_path!r}, k=10, max_seq_length=64, backend={backend!r})\n"
        "print([m in sys.modules for m in ('sentence_transformers', 'transformers', 'torch._dynamo', 'torch')])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str([False, False, False, not openvino])
    versions = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["embed"]["versions"]
    assert "tokenizers" in versions and "sentence_transformers" not in versions and ("openvino" in versions) == openvino
    stats = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["embed"]["stats"]
    assert stats["encoder"] == ("openvino" if openvino else "negmine-bert")
