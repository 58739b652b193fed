"""A model's tokenizer: its ``tokenizer.json`` run by the ``tokenizers`` library alone where that is exact.

transformers' ``AutoTokenizer`` imports torch (its configuration code does), which costs an encoding
process about 200 MB and a second of start-up even where the encoder itself runs without torch (the
OpenVINO backend, negmine.retrieve.openvino_encoder). For a BERT WordPiece tokenizer saved with its
``tokenizer.json``, transformers' fast tokenizer is that file's ``tokenizers.Tokenizer`` with
truncation and padding set per call; :class:`JsonTokenizer` runs the same file the same way, so the
token ids, attention masks and token types are equal (tests/retrieve/test_tokenizer.py compares
them with ``AutoTokenizer`` on every run). :func:`load_tokenizer` uses it only where the model's
``tokenizer_config.json`` cannot make transformers behave differently (:func:`exact_json`);
anything else gets ``AutoTokenizer``.
"""

from __future__ import annotations

import numpy as np

# tokenizer_config.json keys whose values :func:`exact_json` checks against tokenizer.json; any other key
# outside these sets sends the model to AutoTokenizer
_BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast")
_NORMALIZER_KEYS = {"do_lower_case": ("lowercase", True), "strip_accents": ("strip_accents", None), "tokenize_chinese_chars": ("handle_chinese_chars", True)}
_PLAIN_KEYS = {"unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "name_or_path", "model_max_length", "do_basic_tokenize",
               "never_split", "tokenizer_class", "clean_up_tokenization_spaces", "special_tokens_map_file", "extra_special_tokens",
               "added_tokens_decoder", "padding_side", "truncation_side", "model_input_names", *_NORMALIZER_KEYS}


def load_tokenizer(name_or_path: str, fetch, config: dict | None, max_length: int | None, positions: int | None):
    """The tokenizer of the model at ``name_or_path`` (``fetch``: filename → local path or None; ``config``: its
    tokenizer_config.json), limited to ``max_length`` tokens (None: the tokenizer's own limit, capped at the
    model's ``positions``, as sentence-transformers does): a :class:`JsonTokenizer` where :func:`exact_json`
    allows, else transformers' ``AutoTokenizer``."""
    path = fetch("tokenizer.json")
    if path is not None and isinstance(config, dict):
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(path))
        if exact_json(config, backend):
            limit = max_length if max_length is not None else _capped(config.get("model_max_length"), positions)
            return JsonTokenizer(backend, str(config["pad_token"]), limit)
    from transformers import AutoTokenizer

    if max_length is not None:
        return AutoTokenizer.from_pretrained(name_or_path, model_max_length=max_length)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    tokenizer.model_max_length = _capped(tokenizer.model_max_length, positions)
    return tokenizer


def _capped(limit, positions: int | None) -> int:
    limit = int(limit) if isinstance(limit, (int, float)) and limit > 0 else int(1e30)
    return min(limit, positions) if positions and positions > 0 else limit


def exact_json(config: dict, backend) -> bool:
    """Whether transformers would tokenise exactly as ``backend`` (the model's ``tokenizer.json``) with this
    ``tokenizer_config.json``: a BERT tokenizer class, every setting one this module knows, the
    normaliser's settings equal to the config's, padding and truncation on the right, and the special
    tokens and added tokens the config names already in the file."""
    import json

    if config.get("tokenizer_class") not in _BERT_CLASSES or set(config) - _PLAIN_KEYS:
        return False
    if config.get("padding_side", "right") != "right" or config.get("truncation_side", "right") != "right":
        return False
    if config.get("model_input_names", ["input_ids", "token_type_ids", "attention_mask"]) != ["input_ids", "token_type_ids", "attention_mask"]:
        return False
    saved = json.loads(backend.to_str())
    normalizer = saved.get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return False
    for key, (field, default) in _NORMALIZER_KEYS.items():
        if config.get(key, default) != normalizer.get(field, default):
            return False
    if (saved.get("model") or {}).get("type") != "WordPiece" or (saved.get("post_processor") or {}).get("type") != "TemplateProcessing":
        return False
    vocab = backend.get_vocab(with_added_tokens=True)
    specials = [config.get(k) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")]
    if not all(isinstance(t, str) and t in vocab for t in specials):
        return False
    added = {str(entry.get("content")) for entry in (config.get("added_tokens_decoder") or {}).values() if isinstance(entry, dict)}
    in_file = {str(entry.get("content")) for entry in saved.get("added_tokens") or []}
    return added <= in_file


class JsonTokenizer:
    """The calls negmine makes of a transformers tokenizer (``tokenizer(texts, padding=True,
    truncation=..., return_tensors="np", pad_to_multiple_of=...)`` and ``model_max_length``), run by a
    ``tokenizers.Tokenizer``."""

    def __init__(self, backend, pad_token: str, model_max_length: int):
        self.backend = backend
        self.pad_token = pad_token
        self.pad_token_id = backend.token_to_id(pad_token)
        self.model_max_length = model_max_length

    def __call__(self, texts: list[str], padding: bool = False, truncation=False, max_length: int | None = None,
                 return_tensors: str | None = None, pad_to_multiple_of: int | None = None, add_special_tokens: bool = True,
                 return_attention_mask: bool = True, return_token_type_ids: bool = True) -> dict:
        """transformers' batch call for these arguments (truncation and padding are set on every call, as
        transformers sets them, so the file's own settings never apply): ``truncation`` True or "longest_first" cuts each text
        to ``max_length`` (default: :attr:`model_max_length`); ``padding`` True pads to the batch's longest
        (rounded up to ``pad_to_multiple_of``); ``return_tensors`` "np" gives int64 arrays, "pt" torch tensors."""
        backend = self.backend
        if truncation:
            backend.enable_truncation(int(max_length or self.model_max_length), strategy="longest_first")
        else:
            backend.no_truncation()
        if padding:
            backend.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token, pad_to_multiple_of=pad_to_multiple_of)
        else:
            backend.no_padding()
        encodings = backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        fields = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            fields["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
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
