"""A model's tokenizer, run by the ``tokenizers`` library alone: the pipeline transformers builds, saved once.

transformers' ``AutoTokenizer`` imports torch (its configuration code does), which costs an encoding
process about 200 MB and a second of start-up even where the encoder itself runs without torch (the
OpenVINO backend, negmine.retrieve.openvino_encoder). A transformers *fast* tokenizer is a
``tokenizers.Tokenizer`` (the pipeline it builds from the model's tokenizer files and
``tokenizer_config.json``) plus a few settings (padding and truncation sides, the pad token, which
fields the model takes); its batch call sets truncation and padding on that pipeline and runs it.
The first time a model's tokenizer is loaded, :func:`load_tokenizer` lets ``AutoTokenizer`` build it,
saves the pipeline and the settings in negmine's cache (negmine.retrieve.cache.cache_root, under
``tokenizers/``, in a folder named by the hash of the model's tokenizer files and the transformers and
tokenizers versions), and from then on runs them as :class:`JsonTokenizer` does, without transformers.
The tokens are transformers' own (tests/retrieve/test_tokenizer.py compares the two for BERT, MPNet-,
RoBERTa- and XLM-RoBERTa-style tokenizers and for configurations that differ from their tokenizer.json).

Only a tokenizer whose class runs transformers' generic fast path (:func:`capturable`: none of the methods
a batch call goes through is overridden) is saved; any other is ``AutoTokenizer`` itself on every run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from negmine.retrieve.cache import cache_root, publish

# bump when what is saved changes: older folders are then not read
CAPTURE_FORMAT = 1
# the files AutoTokenizer may read to build a tokenizer: their bytes name the saved one
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "config.json",
                   "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")
# the methods of transformers' fast tokenizer a batch call goes through (names from transformers 4 and 5):
# a class that overrides one may tokenise differently from its pipeline, so it is not saved
CALL_PATH = ("__call__", "_call_one", "_get_padding_truncation_strategies", "_encode_plus", "_batch_encode_plus",
             "set_truncation_and_padding", "_convert_encoding", "_switch_to_input_mode")
SETTINGS = ("pad_token", "pad_token_id", "pad_token_type_id", "padding_side", "truncation_side", "split_special_tokens",
            "model_input_names", "model_max_length")


def load_tokenizer(name_or_path: str, fetch, max_length: int | None, positions: int | None):
    """The tokenizer of the model at ``name_or_path`` (``fetch``: filename → local path or None), limited
    to ``max_length`` tokens (None: the tokenizer's own limit, capped at the model's ``positions``, as
    sentence-transformers does): a :class:`JsonTokenizer` of the saved pipeline (saved now if it is not
    yet), or transformers' ``AutoTokenizer`` where :func:`capturable` refuses the tokenizer."""
    from tokenizers import Tokenizer

    folder = cache_root_tokenizers() / tokenizer_key(fetch)
    saved = _read_saved(folder)
    if saved is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if not capturable(tokenizer):
            tokenizer.model_max_length = max_length if max_length is not None else _capped(tokenizer.model_max_length, positions)
            return tokenizer
        pipeline, settings = tokenizer.backend_tokenizer.to_str(), {name: _setting(tokenizer, name) for name in SETTINGS}
        _save(folder, pipeline, settings)
        saved = Tokenizer.from_str(pipeline), settings
    backend, settings = saved
    limit = max_length if max_length is not None else _capped(settings["model_max_length"], positions)
    return JsonTokenizer(backend, settings, limit)


def cache_root_tokenizers() -> Path:
    return cache_root() / "tokenizers"


def tokenizer_key(fetch) -> str:
    """The saved tokenizer's folder name: the sha256 of the model's tokenizer files (:data:`TOKENIZER_FILES`,
    each by name and bytes), the transformers and tokenizers versions and :data:`CAPTURE_FORMAT`."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = fetch(name)
        if path is not None:
            digest.update(name.encode() + b"\0" + hashlib.sha256(Path(path).read_bytes()).digest())
    try:
        transformers = version("transformers")
    except PackageNotFoundError:
        transformers = "none"
    return f"{digest.hexdigest()[:24]}-tf{transformers}-tk{version('tokenizers')}-c{CAPTURE_FORMAT}"


def capturable(tokenizer) -> bool:
    """Whether ``tokenizer`` (from ``AutoTokenizer``) tokenises a batch by running its ``tokenizers`` pipeline
    with the settings :data:`SETTINGS` alone: a fast tokenizer whose class keeps every method of
    :data:`CALL_PATH` as transformers' fast tokenizer defines it, with a pipeline that can be saved."""
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        return False
    for name in CALL_PATH:
        if hasattr(PreTrainedTokenizerFast, name) and getattr(type(tokenizer), name) is not getattr(PreTrainedTokenizerFast, name):
            return False
    try:
        tokenizer.backend_tokenizer.to_str()
    except Exception:  # noqa: BLE001 (tokenizers raises a bare Exception: a component written in Python cannot be saved)
        return False
    return True


def _setting(tokenizer, name: str):
    value = getattr(tokenizer, name, None)
    if name == "split_special_tokens":
        return bool(value)
    if name == "model_input_names":
        return list(value)
    if name == "model_max_length":
        return int(value) if isinstance(value, (int, float)) and value < 1e18 else None
    return value


def _read_saved(folder: Path):
    """The saved pipeline (a ``tokenizers.Tokenizer``) and settings, or None where none is saved; a folder that
    cannot be read back (damaged, or written by hand) is removed, so that the tokenizer is saved anew."""
    from tokenizers import Tokenizer

    if not folder.exists():
        return None
    try:
        settings = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
        backend = Tokenizer.from_file(str(folder / "tokenizer.json")) if isinstance(settings, dict) and set(SETTINGS) <= set(settings) else None
    except Exception:  # noqa: BLE001 (tokenizers raises a bare Exception for a file it cannot parse)
        backend = None
    if backend is None:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return backend, settings


def _save(folder: Path, pipeline: str, settings: dict) -> None:
    """Published whole (negmine.retrieve.cache.publish); a cache that cannot be written is skipped (the
    tokenizer is then built by transformers again next time)."""

    def fill(tmp: Path) -> None:
        (tmp / "tokenizer.json").write_text(pipeline, encoding="utf-8")
        (tmp / "settings.json").write_text(json.dumps(settings, sort_keys=True), encoding="utf-8")

    try:
        publish(folder, fill)
    except OSError:
        pass


def _capped(limit, positions: int | None) -> int:
    limit = int(limit) if isinstance(limit, (int, float)) and 0 < limit < 1e18 else int(1e30)
    return min(limit, positions) if positions and positions > 0 else limit


class JsonTokenizer:
    """The calls negmine makes of a transformers tokenizer (``tokenizer(texts, padding=True,
    truncation=..., return_tensors="np", pad_to_multiple_of=...)`` and ``model_max_length``), run by a
    ``tokenizers.Tokenizer`` with the settings transformers' fast tokenizer had (:data:`SETTINGS`)."""

    def __init__(self, backend, settings: dict, model_max_length: int):
        self.backend = backend
        self.pad_token = settings["pad_token"]
        self.pad_token_id = settings["pad_token_id"]
        self.pad_token_type_id = int(settings["pad_token_type_id"] or 0)
        self.padding_side = settings["padding_side"]
        self.truncation_side = settings["truncation_side"]
        self.model_input_names = list(settings["model_input_names"])
        self.model_max_length = model_max_length
        backend.encode_special_tokens = bool(settings["split_special_tokens"])

    def __call__(self, texts: list[str], padding: bool = False, truncation=False, max_length: int | None = None,
                 return_tensors: str | None = None, pad_to_multiple_of: int | None = None, add_special_tokens: bool = True,
                 return_attention_mask: bool | None = None, return_token_type_ids: bool | None = None) -> dict:
        """transformers' batch call for these arguments (truncation and padding are set on every call, as
        transformers sets them, so the pipeline's own settings never apply): ``truncation`` True or
        "longest_first" cuts each text to ``max_length`` (default: :attr:`model_max_length`); ``padding`` True
        pads to the batch's longest (rounded up to ``pad_to_multiple_of``); the token types and attention mask
        are returned where asked, by default where the model takes them; ``return_tensors`` "np" gives int64
        arrays, "pt" torch tensors."""
        backend = self.backend
        if truncation:
            backend.enable_truncation(int(max_length or self.model_max_length), strategy="longest_first", direction=self.truncation_side)
        else:
            backend.no_truncation()
        if padding:
            if self.pad_token is None:
                raise ValueError("this tokenizer has no padding token, so a batch cannot be padded")
            backend.enable_padding(direction=self.padding_side, pad_id=self.pad_token_id, pad_type_id=self.pad_token_type_id,
                                   pad_token=self.pad_token, pad_to_multiple_of=pad_to_multiple_of)
        else:
            backend.no_padding()
        encodings = backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        fields = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids if return_token_type_ids is not None else "token_type_ids" in self.model_input_names:
            fields["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask if return_attention_mask is not None else "attention_mask" in self.model_input_names:
            fields["attention_mask"] = [e.attention_mask for e in encodings]
        if return_tensors is None:
            return fields
        arrays = {name: np.asarray(rows, dtype=np.int64).reshape(len(rows), -1) for name, rows in fields.items()}
        if return_tensors == "np":
            return arrays
        if return_tensors == "pt":
            import torch

            return {name: torch.from_numpy(array) for name, array in arrays.items()}
        raise ValueError(f"unsupported return_tensors {return_tensors!r}")
