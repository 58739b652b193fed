"""The OpenVINO encoder backend: same embeddings as sentence-transformers' within rounding, exported once,
chosen by auto where it runs the model, part of the embeddings' cache key."""

import io
import os

import numpy as np
import pytest
from conftest import SAMPLE, invoke

from negmine import progress
from negmine.errors import BadInputError
from negmine.ingest import ingest
from negmine.retrieve.backends import BACKENDS, openvino_installed, resolve_backend
from negmine.retrieve.cache import cache_root
from negmine.retrieve.candidates import doc_texts
from negmine.retrieve.device import native_bfloat16
from negmine.retrieve.encode import encode
from negmine.retrieve.models import encoder_kind, load_model

pytestmark = pytest.mark.skipif(not openvino_installed(), reason="openvino is not installed")
INSTALLED = [b for b in BACKENDS if b != "auto"]  # every backend this suite's install has


@pytest.fixture(scope="module")
def texts():
    corpus = doc_texts(ingest(SAMPLE).corpus)
    return corpus + ["", "a", "protein " * 400]  # an empty text, a one-token one, one past the length limit


@pytest.fixture(scope="module")
def reference(model_path, texts):
    """sentence-transformers' own float32 embeddings of the texts."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = 128
    return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


@pytest.mark.parametrize("backend", INSTALLED)
def test_each_backend_matches_sentence_transformers(model_path, texts, reference, backend):
    model = load_model(model_path, 128, backend=backend)
    assert encoder_kind(model) == ("openvino" if backend == "openvino" else "negmine-bert")
    emb = encode(model, texts, 32)
    assert emb.shape == reference.shape and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert float((emb * reference).sum(1).min()) >= 0.9999


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_openvino_bfloat16_within_rounding_of_float32(model_path, texts, reference):
    emb = encode(load_model(model_path, 128, precision="bfloat16", backend="openvino"), texts, 32)
    assert float((emb * reference).sum(1).min()) >= 0.999  # bfloat16 keeps 8 bits of mantissa
    assert float((emb * reference).sum(1).mean()) >= 0.9999


def test_openvino_is_deterministic_and_exported_once(model_path, texts):
    first = encode(load_model(model_path, 128, backend="openvino"), texts, 32)
    folders = sorted((cache_root() / "openvino").iterdir())
    graph = folders[0] / "model.xml"
    stamp = graph.stat().st_mtime_ns
    second = encode(load_model(model_path, 128, backend="openvino"), texts, 32)
    assert first.tobytes() == second.tobytes()
    assert sorted((cache_root() / "openvino").iterdir()) == folders and graph.stat().st_mtime_ns == stamp  # read, not exported again
    assert not [p for p in (cache_root() / "openvino").iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_auto_chooses_openvino_only_where_it_runs_the_model(model_path, tmp_path):
    assert resolve_backend("auto", model_path, "float32") == "openvino"
    assert resolve_backend("torch", model_path, "float32") == "torch"
    assert resolve_backend("auto", model_path, "float16", "cuda") == "torch"  # a GPU encoder stays on torch
    # a checkpoint no export runs (a decoder): torch under auto, an error when asked for
    from test_encoder import variant

    other = variant(model_path, tmp_path / "decoder", config={"is_decoder": True})
    assert resolve_backend("auto", other, "float32") == "torch"
    with pytest.raises(BadInputError, match="--backend"):
        resolve_backend("openvino", other, "float32")
    with pytest.raises(BadInputError, match="--backend"):
        resolve_backend("onnx", model_path, "float32")


def test_auto_keeps_an_encoder_that_would_run_on_a_gpu_on_torch(model_path, monkeypatch):
    from negmine.retrieve import device

    monkeypatch.setattr(device, "auto_device", lambda: "cuda")  # a machine where the encoder loads on a GPU
    assert resolve_backend("auto", model_path, "float32") == "torch"
    with pytest.raises(BadInputError, match="--backend.*CPU"):
        resolve_backend("openvino", model_path, "float32")


def test_backend_is_in_the_cache_key_and_the_stats(model_path, tmp_path):
    run = tmp_path / "run"
    common = ["mine", "--data", SAMPLE, "--out", run, "--model", model_path, "--max-seq-length", "64", "--strategy", "topk", "--json"]
    import json

    ran = json.loads(invoke(*common, "--backend", "openvino").stdout)
    assert ran["embed"]["stats"]["backend"] == "openvino" and ran["embed"]["stats"]["encoder"] == "openvino"
    again = json.loads(invoke(*common).stdout)  # auto resolves to openvino here: nothing reruns
    assert again["embed"]["skipped"] and again["dense"]["skipped"]
    torch_run = json.loads(invoke(*common, "--backend", "torch").stdout)
    assert not torch_run["embed"]["skipped"] and not torch_run["dense"]["skipped"]
    assert torch_run["embed"]["stats"]["backend"] == "torch"


def test_unknown_backend_exits_2_naming_the_option(model_path, tmp_path):
    result = invoke("mine", "--data", SAMPLE, "--out", tmp_path / "run", "--model", model_path, "--backend", "onnx")
    assert result.exit_code == 2 and "--backend" in result.output
    assert not (tmp_path / "run" / "embeddings").exists()


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NEGMINE_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("NEGMINE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "negmine"
    assert os.environ["XDG_CACHE_HOME"] == str(tmp_path / "x")


@pytest.mark.parametrize("pooling", [{"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True},
                                     {"pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}], ids=["cls", "max"])
def test_openvino_pools_as_sentence_transformers(model_path, texts, tmp_path, pooling):
    from sentence_transformers import SentenceTransformer
    from test_encoder import variant

    path = variant(model_path, tmp_path / "pooled", pooling=pooling)
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = 128
    expected = st.encode(texts[:60], batch_size=32, normalize_embeddings=True)
    model = load_model(path, 128, backend="openvino")
    queued = encode(model, texts[:60], 32)  # batches queued on the streams, pooled with numpy
    one_by_one = model.encode(texts[:60], batch_size=32, normalize_embeddings=True)  # one batch at a time, pooled with torch
    assert float((queued * expected).sum(1).min()) >= 0.9999
    assert np.allclose(queued, one_by_one, atol=1e-6)


def architecture(model_path: str, where, model_type: str, seed: int = 0) -> str:
    """A small sentence-transformers model of ``model_type`` with random weights (``seed``), mean pooling and
    normalisation, and all-MiniLM's tokenizer (its ids are below every vocabulary here)."""
    import json
    from pathlib import Path

    import torch
    from transformers import AutoConfig, AutoModel

    src = Path(model_path)
    where.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "modules.json", "sentence_bert_config.json"):
        if (src / name).exists():
            (where / name).symlink_to(src / name)
    sizes = {"distilbert": {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}}.get(
        model_type, {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64})
    config = AutoConfig.for_model(model_type, vocab_size=30522, pad_token_id=0, max_position_embeddings=160, **sizes)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(where, safe_serialization=True)
    (where / "1_Pooling").mkdir()
    (where / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    return str(where)


@pytest.mark.parametrize("model_type", ["distilbert", "mpnet", "roberta", "xlm-roberta"])
def test_openvino_runs_other_architectures_as_sentence_transformers(model_path, texts, tmp_path, model_type):
    from sentence_transformers import SentenceTransformer

    path = architecture(model_path, tmp_path / model_type, model_type)
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = 128
    expected = st.encode(texts, batch_size=32, normalize_embeddings=True)
    assert resolve_backend("auto", path, "float32") == "openvino"
    log = io.StringIO()
    with progress.reporting(progress.LogReporter(log, every=0)), progress.stage("embed"):
        model = load_model(path, 128, backend="auto")
    assert encoder_kind(model) == "openvino"
    # the export, once per model, is a step of the stage that needs it
    assert [line.split(" (")[0] for line in log.getvalue().splitlines()] == [f"negmine embed openvino export: {i}/4 steps" for i in (1, 2, 3, 4, 4)]
    emb = encode(model, texts, 32)
    assert float((emb * expected).sum(1).min()) >= 0.9999


def test_a_bert_that_negmine_bert_does_not_run_is_exported_from_transformers(model_path, texts, reference, tmp_path):
    from test_encoder import variant

    # relative position embeddings: transformers' BertModel computes them; the trained weights have none, so
    # they start at random: compare with sentence-transformers loading the same folder
    path = variant(model_path, tmp_path / "relative", config={"position_embedding_type": "relative_key"})
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = 128
    expected = st.encode(texts[:40], batch_size=32, normalize_embeddings=True)
    emb = encode(load_model(path, 128, backend="openvino"), texts[:40], 32)
    assert float((emb * expected).sum(1).min()) >= 0.9999


def test_an_export_that_differs_from_torch_is_refused_and_not_cached(model_path, tmp_path, monkeypatch):
    import json
    from pathlib import Path

    import openvino
    import torch

    from negmine.errors import StageError
    from negmine.retrieve import openvino_encoder

    path = Path(architecture(model_path, tmp_path / "mpnet", "mpnet", seed=1))  # weights no other test exported
    config = json.loads((path / "config.json").read_text())
    convert = openvino.convert_model

    def convert_then_drift(module, **kwargs):  # torch then computes something the graph does not
        graph = convert(module, **kwargs)
        with torch.no_grad():
            for weight in module.parameters():
                weight.add_(0.5)
        return graph

    monkeypatch.setattr(openvino, "convert_model", convert_then_drift)
    with pytest.raises(StageError, match="does not compute what torch computes"):
        openvino_encoder.exported_graph(path / "model.safetensors", config, str(path))
    assert not (cache_root() / "openvino" / openvino_encoder.export_key(path / "model.safetensors", config)).exists()
    assert not [p for p in (cache_root() / "openvino").iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_folder_in_the_way_of_an_export_is_reported_and_left_alone(model_path, tmp_path):
    import json
    from pathlib import Path

    from negmine.errors import StageError
    from negmine.retrieve import openvino_encoder

    path = Path(architecture(model_path, tmp_path / "bert", "bert", seed=2))  # weights no other test exported
    config = json.loads((path / "config.json").read_text())
    folder = cache_root() / "openvino" / openvino_encoder.export_key(path / "model.safetensors", config)
    folder.mkdir(parents=True)
    (folder / "stray.txt").write_text("not a graph")
    with pytest.raises(StageError, match="without model.xml is in the way"):
        openvino_encoder.exported_graph(path / "model.safetensors", config, str(path))
    assert os.listdir(folder) == ["stray.txt"]
    assert not [p for p in (cache_root() / "openvino").iterdir() if p.name.startswith(".")]  # no temporary folder left
