"""Loading a bi-encoder: a local path or hub name, the plain-BERT fast path or sentence-transformers, its precision."""

from __future__ import annotations

import os
from pathlib import Path

from negmine.errors import BadInputError, StageError
from negmine.io import malloc_trim
from negmine.retrieve.device import resolve_precision


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


# How load_model loads a model: "auto" runs the plain Transformer → Pooling [→ Normalize] layout without
# sentence-transformers (negmine/encoder.py: negmine/bert.py for plain BERT checkpoints, transformers'
# AutoModel for others; byte-identical embeddings, a smaller process) and anything else through
# sentence-transformers; the other two force one loader.
LOADERS = ("auto", "transformers", "sentence-transformers")


def load_model(
    name_or_path: str, max_seq_length: int | None = None, device: str | None = None, precision: str = "float32",
    loader: str = "auto", backend: str = "torch",
):
    """Load a sentence-transformers model by hub name or local path (offline works with a path),
    its weights in ``precision`` (:data:`PRECISIONS`; "auto" as :func:`resolve_precision` chooses), with
    ``loader`` (:data:`LOADERS`), its transformer run by ``backend`` (negmine.retrieve.backends.BACKENDS;
    "auto" as :func:`~negmine.retrieve.backends.resolve_backend` chooses)."""
    local = check_model(name_or_path)
    precision = resolve_precision(precision, device)
    if loader not in LOADERS:
        raise StageError(f"unknown loader {loader!r}; choose from {list(LOADERS)}")
    if local is not None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub lookups (they hang offline)
    source = str(local) if local is not None else str(name_or_path)
    if backend != "torch":
        from negmine.retrieve.backends import resolve_backend

        if loader == "sentence-transformers" and backend == "openvino":
            raise BadInputError("--backend", "openvino runs negmine's own encoder, not the sentence-transformers loader")
        backend = "torch" if loader == "sentence-transformers" else resolve_backend(backend, source, precision, device)
    if backend == "openvino":
        return _openvino_encoder(name_or_path, source, max_seq_length, precision)
    import torch

    dtype = getattr(torch, precision)
    model = None
    if loader != "sentence-transformers":
        from negmine.retrieve.encoder import PlainEncoder, plain_layout

        layout = plain_layout(source)
        if layout is None and loader == "transformers":
            raise BadInputError(name_or_path, "not a plain Transformer → Pooling [→ Normalize] model; load it with sentence-transformers", field="model")
        if layout is not None:
            try:
                model = PlainEncoder(source, layout, device=device, dtype=None if precision == "float32" else dtype)
            except (OSError, ValueError) as exc:
                raise BadInputError(name_or_path, f"could not load the model ({exc})", field="model") from None
    if model is None:
        model = _load_sentence_transformer(name_or_path, source, device, dtype)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    if precision != "float32":
        model.to(dtype)  # modules after the transformer (pooling, dense) too
        _pad_to_multiple(model, LOW_PRECISION_PAD)
        malloc_trim()  # the float32 pages the conversion read
    return model


def _openvino_encoder(name_or_path: str, source: str, max_seq_length: int | None, precision: str):
    """A :class:`~negmine.retrieve.encoder.PlainEncoder` whose transformer is the model's OpenVINO graph
    (negmine.retrieve.openvino_encoder), in ``precision``; padded lengths rounded up as in low precision (fewer
    shapes for the runtime to prepare kernels for)."""
    from negmine.retrieve.encoder import PlainEncoder, plain_layout
    from negmine.retrieve.openvino_encoder import OpenVINOEncoder

    layout = plain_layout(source)
    try:
        backbone = OpenVINOEncoder(layout["fetch"]("model.safetensors"), layout["model_config"], precision, source=source)
        model = PlainEncoder(source, layout, device="cpu", backbone=backbone)
    except (OSError, ValueError) as exc:
        raise BadInputError(name_or_path, f"could not load the model ({exc})", field="model") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    _pad_to_multiple(model, LOW_PRECISION_PAD)
    return model


def encoder_kind(model) -> str:
    """Which code runs a loaded model: "openvino" (negmine/retrieve/openvino_encoder.py), "negmine-bert"
    (negmine/retrieve/bert.py), "transformers" (AutoModel behind negmine's pooling) or "sentence-transformers"."""
    from negmine.retrieve.encoder import PlainEncoder

    if isinstance(model, PlainEncoder):
        return model.kind
    return "sentence-transformers"


def model_backend(model) -> str:
    """The backend a loaded model's transformer runs on: "openvino" or "torch"."""
    return "openvino" if encoder_kind(model) == "openvino" else "torch"


def _load_sentence_transformer(name_or_path: str, source: str, device: str | None, dtype):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise StageError("the dense stage needs sentence-transformers: pip install sentence-transformers") from None
    import torch

    options = {} if dtype == torch.float32 else {"model_kwargs": {"dtype": dtype}}  # no float32 copy on the way
    try:
        return SentenceTransformer(source, device=device, **options)
    except (OSError, ValueError) as exc:
        raise BadInputError(name_or_path, f"could not load a sentence-transformers model ({exc})", field="model") from None


# In bfloat16 (not float32) RSS grows with every new (batch, length) shape the CPU kernels see: oneDNN
# keeps what it built for each. Padding lengths to a multiple of 16 bounds the number of distinct shapes,
# so memory stops growing once each has been seen, and fewer kernels are built; the attention mask keeps the
# added padding out of attention and pooling.
LOW_PRECISION_PAD = 16


def _pad_to_multiple(model, multiple: int) -> None:
    from negmine.retrieve.encoder import PlainEncoder

    if isinstance(model, PlainEncoder):
        model.tokenizer_kwargs["pad_to_multiple_of"] = multiple
        return
    for module in model:
        kwargs = getattr(module, "processing_kwargs", None)
        if isinstance(kwargs, dict):
            kwargs.setdefault("text", {})["pad_to_multiple_of"] = multiple


# The prompt names sentence-transformers' encode_query / encode_document look for, in order.
PROMPT_NAMES = {"query": ("query",), "document": ("document", "passage", "corpus")}
PROMPT_OPTIONS = {"query": ("--query-prompt", "--query-prompt-name"), "document": ("--corpus-prompt", "--corpus-prompt-name")}


def configured_prompts(name_or_path: str) -> tuple[dict[str, str], str | None]:
    """The prompts a model declares in its sentence-transformers config, and its default prompt name
    (read from the files: no model is loaded)."""
    from negmine.retrieve.encoder import fetcher, read_json

    config = read_json(fetcher(str(name_or_path)), "config_sentence_transformers.json") or {}
    prompts = config.get("prompts") if isinstance(config, dict) else None
    default = config.get("default_prompt_name") if isinstance(config, dict) else None
    return ({str(k): str(v) for k, v in prompts.items()} if isinstance(prompts, dict) else {}), (str(default) if default else None)


def resolve_prompt(model: str, role: str, prompt: str | None = None, prompt_name: str | None = None) -> str:
    """The text put before every ``role`` text ("query" or "document") when ``model`` encodes it.

    ``prompt`` as given; else the model's prompt called ``prompt_name``; else, as
    sentence-transformers' ``encode_query`` / ``encode_document`` do, the model's prompt for the role
    (:data:`PROMPT_NAMES`), else its default prompt; else none (""). What it returns is part of every
    cache key of what is encoded with it.
    """
    text_option, name_option = PROMPT_OPTIONS[role]
    if prompt is not None and prompt_name is not None:
        raise BadInputError(text_option, f"give {text_option} or {name_option}, not both")
    if prompt is not None:
        return prompt
    prompts, default = configured_prompts(model)
    if prompt_name is not None:
        if prompt_name not in prompts:
            raise BadInputError(name_option, f"the model declares no prompt {prompt_name!r}; its prompts are {sorted(prompts)}")
        return prompts[prompt_name]
    for name in PROMPT_NAMES[role]:
        if name in prompts:
            return prompts[name]
    return prompts.get(default, "") if default else ""
