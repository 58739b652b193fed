"""Which runtime runs the encoder's transformer: torch, or OpenVINO (``--backend``).

Both compute the same function of the same weights in the same precision; they differ in how fast. On
a CPU, OpenVINO runs the encoder as one compiled graph (fused attention, kernels chosen for the CPU's
instruction set, every core busy on its own share of a batch) and is faster than torch's operator-by-
operator execution at the same precision; ``bench/vs_sentence_transformers.py`` measures both. Its
embeddings agree with torch's to within rounding (cosine ≥ 0.9999, tests/retrieve/test_backends.py).

``auto`` (the default) chooses OpenVINO where it can run the model exactly as asked: the openvino
package is installed, the encoder runs on the CPU, the model is a plain Transformer → Pooling
[→ Normalize] model saved as safetensors whose architecture negmine exports
(negmine.retrieve.bert_config.exportable: BERT, DistilBERT, MPNet, RoBERTa, XLM-RoBERTa), and the
precision is float32, or bfloat16 on a CPU that computes it natively (AVX512-BF16 or AMX); torch
everywhere else. The backend that ran is
part of the embeddings' cache key and is named in the stage's stats and summary.
"""

from __future__ import annotations

import importlib.util

from negmine.errors import BadInputError

BACKENDS = ("auto", "torch", "openvino")

def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def openvino_unsupported(model: str, precision: str, device: str | None = None) -> str | None:
    """Why OpenVINO cannot run ``model`` in ``precision`` on ``device`` (default: the one an encoder loaded
    here runs on, negmine.retrieve.device.auto_device) (None: it can). Reads the model's config files only; loads nothing."""
    from negmine.retrieve.bert_config import OPENVINO_ARCHITECTURES, exportable
    from negmine.retrieve.device import auto_device, native_bfloat16
    from negmine.retrieve.encoder import plain_layout

    if not openvino_installed():
        return "the openvino package is not installed (pip install openvino)"
    device = str(device or auto_device())
    if device != "cpu":
        return f"it runs on the CPU; this encoder runs on {device}"
    if precision not in ("float32", "bfloat16"):
        return f"it runs float32 or bfloat16, not {precision}"
    if precision == "bfloat16" and not native_bfloat16():
        return "this CPU has no native bfloat16 (AVX512-BF16 or AMX)"
    layout = plain_layout(model)
    if layout is None or not exportable(layout["model_config"]) or layout["fetch"]("model.safetensors") is None:
        return (f"it runs plain encoders ({', '.join(OPENVINO_ARCHITECTURES)}) saved as safetensors "
                "(Transformer → Pooling [→ Normalize]); this model is not one")
    return None


def resolve_backend(backend: str, model: str, precision: str, device: str | None = None) -> str:
    """The backend the encoder of ``model`` runs on in ``precision`` (already resolved, not "auto"):
    ``backend`` itself, checked, or for "auto" OpenVINO where :func:`openvino_unsupported` finds no
    reason against it, else torch."""
    from negmine.errors import check_choice

    check_choice("--backend", backend, BACKENDS)
    if backend == "torch":
        return backend
    reason = openvino_unsupported(model, precision, device)
    if backend == "openvino" and reason is not None:
        raise BadInputError("--backend", f"openvino cannot run this encoder: {reason}; use --backend torch")
    return "torch" if reason is not None else "openvino"
