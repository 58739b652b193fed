"""--precision: the encoder in bfloat16 (float32 embeddings, normalised in float32), cached apart from float32."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from negmine.cli import app
from negmine.retrieve.device import check_precision
from negmine.retrieve.encode import encode
from negmine.retrieve.models import load_model
from negmine.errors import BadInputError
from negmine.rundir import Run
from negmine.runners.dense import dense_stage, embed_stage
from negmine.runners.ingest import ingest_stage
from negmine.summary import _describe

from conftest import SAMPLE

TEXTS = ["short query", "a much longer passage about " + "protein folding and " * 30, "gene expression in mice", "", "aspirin and heart attacks"]


def test_bfloat16_embeddings_are_unit_float32_and_close_to_float32(model_path):
    import torch

    full = encode(load_model(model_path, 64), TEXTS, batch_size=2)
    half = load_model(model_path, 64, precision="bfloat16")
    assert next(half.parameters()).dtype == torch.bfloat16
    low = encode(half, TEXTS, batch_size=2)
    assert low.dtype == np.float32 and low.shape == full.shape
    np.testing.assert_allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)  # normalised in float32
    cosine = (low * full).sum(1)
    assert cosine.min() > 0.999 and not np.array_equal(low, full)
    # lengths padded to a multiple of 16 in low precision only (bounded kernel shapes, bounded RSS)
    assert half.tokenizer_kwargs["pad_to_multiple_of"] == 16
    assert "pad_to_multiple_of" not in load_model(model_path, 64).tokenizer_kwargs
    st_half = load_model(model_path, 64, precision="bfloat16", loader="sentence-transformers")  # the same for sentence-transformers
    assert st_half[0].processing_kwargs["text"]["pad_to_multiple_of"] == 16


def test_unknown_or_unsupported_precision_is_refused():
    with pytest.raises(BadInputError, match=r"--precision: unknown value 'int4'"):
        check_precision("int4")
    with pytest.raises(BadInputError, match="float16 needs a GPU"):
        check_precision("float16", "cpu")
    assert check_precision("float16", "cuda") == "float16"


def test_precision_is_part_of_the_embed_cache_key(tmp_path, model_path):
    run = Run.open(tmp_path / "run")
    ingest_stage(run, SAMPLE)
    first = embed_stage(run, model_path, max_seq_length=64, precision="float32")
    assert "precision" not in run.manifest["stages"]["embed"]["config"]  # float32 runs recorded before the option stay fresh
    full = run.file("embeddings/corpus.npy").read_bytes()
    assert first.entry["stats"]["precision"] == "float32"

    results = dense_stage(run, model_path, k=20, max_seq_length=64, precision="bfloat16")
    assert [r.skipped for r in results] == [False, False]  # a new encode and a new search
    assert run.manifest["stages"]["embed"]["config"]["precision"] == "bfloat16"
    assert run.manifest["stages"]["dense"]["config"]["precision"] == "bfloat16"
    assert run.file("embeddings/corpus.npy").read_bytes() != full
    assert "in bfloat16" in _describe("embed", results[0].entry["stats"])
    again = dense_stage(run, model_path, k=20, max_seq_length=64, precision="bfloat16")
    assert [r.skipped for r in again] == [True, True]


def test_cli_rejects_an_unknown_precision_before_any_stage(tmp_path, model_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["mine", "--data", str(SAMPLE), "--out", str(out), "--model", model_path, "--precision", "fp8", "--json"])
    assert result.exit_code == 2
    assert "--precision: unknown value 'fp8'" in result.output
    assert not (out / "corpus.parquet").exists()
    manifest = out / "manifest.json"
    assert not manifest.exists() or not json.loads(manifest.read_text()).get("stages")


def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    import torch

    from negmine.retrieve import device as dense

    monkeypatch.setattr(dense, "native_bfloat16", lambda: True)
    assert dense.resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(dense, "native_bfloat16", lambda: False)
    assert dense.resolve_precision("auto", "cpu") == "float32"
    assert dense.resolve_precision("bfloat16", "cpu") == "bfloat16"  # an explicit choice stays as it is
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert dense.resolve_precision("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert dense.resolve_precision("auto", "cuda:1") == "float16"
    with pytest.raises(BadInputError, match="--precision: unknown value 'fp8'"):
        dense.resolve_precision("fp8")


def test_native_bfloat16_reads_the_cpu_flags_else_asks_torch(monkeypatch, tmp_path):
    import torch

    from negmine.retrieve import device as dense

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(dense, "_CPUINFO", cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    assert dense.native_bfloat16() is True
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512bw\n")  # bfloat16 emulated: slower than float32
    assert dense.native_bfloat16() is False
    cpuinfo.unlink()  # not Linux: torch's probes
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert dense.native_bfloat16() is True


def test_auto_precision_on_a_cpu_machine_does_not_import_torch():
    """A cached rerun resolves "auto" for its cache keys; on a Linux machine without GPU device files
    that costs no torch import (a rerun with --precision auto stays as light as with float32)."""
    from negmine.retrieve.device import GPU_DEVICE_FILES

    if not Path("/proc/cpuinfo").exists() or any(Path(f).exists() for f in GPU_DEVICE_FILES):
        pytest.skip("decided by torch on this machine")
    code = "import sys; from negmine.retrieve.device import resolve_precision; print(resolve_precision('auto')); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] in ("float32", "bfloat16") and out[1] == "False"


def test_auto_precision_is_recorded_as_the_precision_that_ran(tmp_path, model_path, monkeypatch):
    from negmine.retrieve import device as dense

    run = Run.open(tmp_path / "run")
    ingest_stage(run, SAMPLE)
    dense_stage(run, model_path, k=20, max_seq_length=64, precision="float32")
    monkeypatch.setattr(dense, "native_bfloat16", lambda: False)
    assert [r.skipped for r in dense_stage(run, model_path, k=20, max_seq_length=64, precision="auto")] == [True, True]  # float32 here: reused
    monkeypatch.setattr(dense, "native_bfloat16", lambda: True)
    results = dense_stage(run, model_path, k=20, max_seq_length=64, precision="auto")
    assert [r.skipped for r in results] == [False, False]
    assert results[0].entry["stats"]["precision"] == "bfloat16"
    assert run.manifest["stages"]["dense"]["config"]["precision"] == "bfloat16"
    assert [r.skipped for r in dense_stage(run, model_path, k=20, max_seq_length=64, precision="bfloat16")] == [True, True]
