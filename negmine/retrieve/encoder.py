"""A sentence-transformers model of the common layout, run without sentence-transformers.

Most bi-encoders on the hub (all-MiniLM, bge, e5, gte, …) are saved by sentence-transformers as
Transformer → Pooling (mean, CLS or max) → Normalize. For those, :class:`PlainEncoder` runs the
transformer — on the OpenVINO backend its exported graph (negmine/retrieve/openvino_encoder.py), on torch
negmine's own BERT forward pass (negmine/retrieve/bert.py) where the checkpoint is a plain BERT and
transformers' AutoModel otherwise — with the model's tokenizer (negmine/retrieve/tokenizer.py: the pipeline transformers builds for it,
saved once and run by the tokenizers library), and applies the pooling and
normalisation itself. An encoding process then imports neither sentence-transformers (datasets, pandas,
scipy, scikit-learn come with it) nor transformers' modelling code (torch._dynamo, sympy,
torch.distributed.tensor), whose modules would otherwise stay resident for the whole encode
(bench/vs_sentence_transformers.py reports the peak RSS of a mine).

It computes what sentence-transformers computes, operation for operation, on the same batches:
embeddings are byte-identical (tests/test_encoder.py compares the two). Anything else — other
modules, lower-cased input, prompts excluded from pooling, custom code, encoder-decoder models — is
left to sentence-transformers: :func:`plain_layout` returns None and :func:`negmine.retrieve.models.load_model`
falls back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from negmine.io import malloc_trim

_ST = "sentence_transformers."
_TRANSFORMER, _POOLING, _NORMALIZE = "Transformer", "Pooling", "Normalize"
POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}
# sentence_bert_config.json / Pooling config keys this loader understands, with the values it supports
# (None: any value); another key or value sends the model to sentence-transformers
# (sentence-transformers 6 saves the second form of each: modality_config, pooling_mode, embedding_dimension)
_TRANSFORMER_KEYS = {
    "max_seq_length": None,
    "do_lower_case": (False,),
    "transformer_task": ("feature-extraction",),
    "modality_config": ({"text": {"method": "forward", "method_output_name": "last_hidden_state"}},),
    "module_output_name": ("token_embeddings",),
}
_POOLING_KEYS = {
    "word_embedding_dimension": None,
    "embedding_dimension": None,
    "pooling_mode": ("cls", "mean", "max", ["cls"], ["mean"], ["max"]),
    "pooling_mode_cls_token": None,
    "pooling_mode_mean_tokens": None,
    "pooling_mode_max_tokens": None,
    "pooling_mode_mean_sqrt_len_tokens": (False,),
    "pooling_mode_weightedmean_tokens": (False,),
    "pooling_mode_lasttoken": (False,),
    "include_prompt": (True,),
}


def read_json(fetch, filename: str) -> dict | list | None:
    path = fetch(filename)
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fetcher(name_or_path: str):
    """filename → a local path of that file of the model (None where it has none): a folder's files,
    or a hub model's through huggingface_hub (its cache first; offline it reads only the cache)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return lambda filename: (local / filename) if (local / filename).is_file() else None

    def fetch(filename: str):
        try:
            from huggingface_hub import hf_hub_download

            return hf_hub_download(name_or_path, filename)
        except Exception:  # missing file, no network, no such repo: not a plain model
            return None

    return fetch


def _accepts(config: dict, allowed: dict) -> bool:
    return all(key in allowed and (allowed[key] is None or value in allowed[key]) for key, value in config.items())


def plain_layout(name_or_path: str) -> dict | None:
    """What :class:`PlainEncoder` needs to know of a model, or None where the model is not the plain
    Transformer → Pooling [→ Normalize] layout (sentence-transformers then loads it)."""
    fetch = fetcher(str(name_or_path))
    modules = read_json(fetch, "modules.json")
    if not isinstance(modules, list) or len(modules) not in (2, 3):
        return None
    kinds = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    expected = [_TRANSFORMER, _POOLING, _NORMALIZE][: len(modules)]
    if len(kinds) != len(modules) or not all(k.startswith(_ST) and k.rsplit(".", 1)[-1] == e for k, e in zip(kinds, expected)):
        return None
    if modules[0].get("path", "") != "":
        return None
    st_config = read_json(fetch, "config_sentence_transformers.json") or {}
    if not isinstance(st_config, dict) or st_config.get("model_type", "SentenceTransformer") != "SentenceTransformer":
        return None
    transformer = read_json(fetch, "sentence_bert_config.json") or {}
    pooling = read_json(fetch, f"{modules[1].get('path', '')}/config.json")
    model_config = read_json(fetch, "config.json")
    if not (isinstance(transformer, dict) and _accepts(transformer, _TRANSFORMER_KEYS)):
        return None
    if not (isinstance(pooling, dict) and _accepts(pooling, _POOLING_KEYS)):
        return None
    modes = [mode for key, mode in POOLING_MODES.items() if pooling.get(key)]
    if "pooling_mode" in pooling:
        modes.append(pooling["pooling_mode"] if isinstance(pooling["pooling_mode"], str) else pooling["pooling_mode"][0])
    if len(modes) != 1 or not isinstance(model_config, dict):
        return None
    if model_config.get("is_encoder_decoder") or model_config.get("auto_map"):
        return None  # T5-style or custom code: sentence-transformers knows how to load those
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or st_config.get("default_prompt_name"):
        return None  # a default prompt changes every encode call; leave it to sentence-transformers
    return {
        "pooling": modes[0],
        "normalize": len(modules) == 3,
        "max_seq_length": transformer.get("max_seq_length"),
        "dimension": pooling.get("embedding_dimension", pooling.get("word_embedding_dimension")),
        "prompts": {str(k): str(v) for k, v in prompts.items()},
        "model_config": model_config,
        "fetch": fetch,
    }


def _backbone(name_or_path: str, layout: dict, dtype):
    """negmine's own BERT (negmine/bert.py) where the checkpoint is one it runs, else transformers' AutoModel."""
    from negmine.retrieve import bert
    from negmine.retrieve.bert_config import supported

    if supported(layout["model_config"]):
        weights = layout["fetch"]("model.safetensors")
        if weights is not None:
            model = bert.load(weights, layout["model_config"], dtype)
            if model is not None:
                return model
    from transformers import AutoModel

    return AutoModel.from_pretrained(name_or_path, **({} if dtype is None else {"dtype": dtype}))


def _is_own_bert(model) -> bool:
    from negmine.retrieve.bert import Bert

    return isinstance(model, Bert)


class PlainEncoder:
    """The part of ``SentenceTransformer`` that negmine's encoding uses, for a plain layout."""

    def __init__(self, name_or_path: str, layout: dict, device: str | None = None, dtype=None, backbone=None):
        """``backbone``: the transformer, already loaded (negmine.retrieve.openvino_encoder.OpenVINOEncoder), called as
        negmine's BERT is; by default negmine's BERT or transformers' AutoModel in ``dtype``."""
        from negmine.retrieve.tokenizer import load_tokenizer

        self.auto_model = backbone if backbone is not None else _backbone(str(name_or_path), layout, dtype)
        self.own_bert = backbone is not None or _is_own_bert(self.auto_model)
        self.kind = "openvino" if backbone is not None else "negmine-bert" if self.own_bert else "transformers"
        self.tokenizer = load_tokenizer(str(name_or_path), layout["fetch"], layout["max_seq_length"],
                                        layout["model_config"].get("max_position_embeddings"))
        self.pooling = layout["pooling"]
        self.normalize = layout["normalize"]
        self.prompts = layout["prompts"]
        self.dimension = layout["dimension"] or layout["model_config"].get("hidden_size")
        self.tokenizer_kwargs: dict = {}
        if backbone is not None:  # runs on the CPU, without torch
            self.device = "cpu"
            return
        import torch

        from negmine.retrieve.device import default_device

        if not self.own_bert:
            self.auto_model.eval()
        self.device = torch.device(device or default_device())
        self.auto_model.to(self.device)

    @property
    def max_seq_length(self) -> int | None:
        return self.tokenizer.model_max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.tokenizer.model_max_length = value

    def parameters(self):
        return self.auto_model.parameters()

    def to(self, *args, **kwargs) -> "PlainEncoder":
        self.auto_model.to(*args, **kwargs)
        return self

    def get_embedding_dimension(self) -> int:
        return int(self.dimension)

    def encode(
        self, texts: list[str], batch_size: int = 32, prompt_name: str | None = None, normalize_embeddings: bool = False,
        convert_to_numpy: bool = True, convert_to_tensor: bool = False, show_progress_bar: bool = False, prompt: str | None = None,
    ):
        """One embedding per text, in order, as ``SentenceTransformer.encode`` returns it: a tensor in the
        weights' dtype (``convert_to_tensor``) or a float32 array. Batches are formed as sentence-transformers
        forms them (texts sorted by character length, longest first)."""
        import torch

        prompt = prompt_text(self.prompts, prompt_name, prompt)
        order = np.argsort([-len(t) for t in texts])
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                features = self._features([prompt + texts[i] for i in order[start : start + batch_size]], "pt")
                features = {k: v.to(self.device) for k, v in features.items()}
                if self.own_bert:
                    tokens = self.auto_model(**features)
                else:
                    tokens = self.auto_model(**features, return_dict=True).last_hidden_state
                emb = self._pool(tokens, features["attention_mask"])
                # normalised twice where both apply, as sentence-transformers does (its Normalize module, then
                # encode's normalize_embeddings), so the bytes match
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
                if normalize_embeddings:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                out.extend(emb.cpu())
        restored = [out[i] for i in np.argsort(order)]
        emb = torch.stack(restored) if restored else torch.empty((0, self.get_embedding_dimension()))
        return emb if convert_to_tensor or not convert_to_numpy else emb.float().numpy()

    def _features(self, texts: list[str], tensors: str):
        """The tokenizer's padded batch of ``texts`` (``tensors``: "pt" or "np"), as sentence-transformers tokenises."""
        return self.tokenizer(texts, padding=True, truncation="longest_first", return_tensors=tensors, **self.tokenizer_kwargs)

    @property
    def pipelined(self) -> bool:
        """Whether :meth:`encode_batches` overlaps the batches (a backbone that runs them asynchronously)."""
        return hasattr(self.auto_model, "run_batches")

    def tokenize(self, texts: list[str], prompt: str = "") -> Tokenized:
        """Every text (after ``prompt``) tokenised once, truncated to :attr:`max_seq_length`, for :meth:`encode_batches`."""
        return Tokenized(self.tokenizer, [prompt + t for t in texts], self.max_seq_length, self.tokenizer_kwargs.get("pad_to_multiple_of"))

    def encode_batches(self, tokens: Tokenized, batches: list[list[int]], on_batch=None) -> np.ndarray:
        """Normalised float32 embeddings of the texts of ``tokens`` encoded in ``batches`` (lists of positions), by a
        backbone with ``run_batches`` (negmine.retrieve.openvino_encoder.OpenVINOEncoder): the next batches are padded
        and the finished ones pooled while the backbone runs."""
        out = np.empty((len(tokens.lengths), self.get_embedding_dimension()), dtype=np.float32)
        trimmed = time.monotonic()
        # pooled and normalised with numpy: torch's worker threads would compete with the backbone's for the cores
        for batch, hidden, mask in self.auto_model.run_batches((batch, tokens.batch(batch)) for batch in batches):
            emb = _normalized(self._pool_numpy(hidden, mask))
            out[batch] = _normalized(emb) if self.normalize else emb
            if time.monotonic() - trimmed >= TRIM_EVERY_S:  # finished batches' buffers back to the system
                malloc_trim()
                trimmed = time.monotonic()
            if on_batch:
                on_batch(len(batch))
        malloc_trim()
        return out

    def _pool_numpy(self, tokens: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """:meth:`_pool` on float32 arrays."""
        if self.pooling == "cls":
            return tokens[np.arange(len(tokens)), attention_mask.argmax(axis=1)]
        if self.pooling == "max":
            return np.where(attention_mask[:, :, None] > 0, tokens, -np.inf).max(axis=1)
        mask = attention_mask[:, :, None].astype(np.float32)
        return (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)

    def _pool(self, tokens, attention_mask):
        """sentence-transformers' Pooling over padded batches, for one mode."""
        import torch

        if self.pooling == "cls":
            first = attention_mask.to(torch.int).argmax(dim=1)
            index = first.unsqueeze(-1).unsqueeze(1).expand(-1, 1, tokens.shape[-1])
            return torch.gather(tokens, 1, index).squeeze(1)
        if self.pooling == "max":
            mask = attention_mask.unsqueeze(-1).expand_as(tokens).to(tokens.dtype)
            return tokens.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        accumulate = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        total = (tokens * mask).sum(dim=1, dtype=accumulate)
        count = torch.clamp(mask.sum(dim=1, dtype=accumulate), min=1e-9)
        return (total / count).to(tokens.dtype)


# The pipelined encoder hands freed batch buffers back to the system at most this often: a trim walks the
# whole heap and stalls the thread that feeds the backbone, so once per batch costs several percent of an encode.
TRIM_EVERY_S = 1.0


class Tokenized:
    """Texts tokenised once (truncated to ``limit`` tokens, not padded), held as flat int32 arrays;
    :meth:`batch` pads the rows of one batch as the tokenizer pads a batch (``padding=True``, lengths rounded
    up to ``pad_multiple``, on the tokenizer's padding side), so the texts are not tokenised again."""

    SLICE = 512  # texts per tokenizer call: the Python lists it returns stay small and short-lived

    def __init__(self, tokenizer, texts: list[str], limit: int | None, pad_multiple: int | None = None):
        """``texts`` tokenised by ``tokenizer`` (a transformers tokenizer or negmine.retrieve.tokenizer.JsonTokenizer),
        with special tokens, each cut to ``limit`` tokens (None: not cut)."""
        from itertools import chain

        ids, types, lengths = [], [], []
        for start in range(0, len(texts), self.SLICE):
            encoded = tokenizer(texts[start : start + self.SLICE], truncation=limit is not None, max_length=limit,
                                add_special_tokens=True, return_attention_mask=False)
            lengths.extend(len(row) for row in encoded["input_ids"])
            ids.append(np.fromiter(chain.from_iterable(encoded["input_ids"]), dtype=np.int32))
            if "token_type_ids" in encoded:  # a tokenizer without token types: all zero, as the encoder assumes
                types.append(np.fromiter(chain.from_iterable(encoded["token_type_ids"]), dtype=np.int32))
            else:
                types.append(np.zeros(len(ids[-1]), dtype=np.int32))
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
        self.types = np.concatenate(types) if types else np.zeros(0, dtype=np.int32)
        self.pad_id = tokenizer.pad_token_id  # read when a batch is padded (lengths alone need no pad token)
        self.pad_type_id = int(getattr(tokenizer, "pad_token_type_id", 0))
        self.left = getattr(tokenizer, "padding_side", "right") == "left"
        self.pad_multiple = pad_multiple

    def batch(self, positions: list[int]) -> dict[str, np.ndarray]:
        """input_ids, attention_mask and token_type_ids (int64, rows × padded length) of the texts at ``positions``."""
        width = int(self.lengths[positions].max()) if len(positions) else 0
        if self.pad_multiple and width % self.pad_multiple:
            width += self.pad_multiple - width % self.pad_multiple
        ids = np.full((len(positions), width), int(self.pad_id), dtype=np.int64)
        types = np.full((len(positions), width), self.pad_type_id, dtype=np.int64)
        mask = np.zeros((len(positions), width), dtype=np.int64)
        for row, i in enumerate(positions):
            n, start = int(self.lengths[i]), int(self.starts[i])
            cols = slice(width - n, width) if self.left else slice(0, n)
            ids[row, cols] = self.ids[start : start + n]
            types[row, cols] = self.types[start : start + n]
            mask[row, cols] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def prompt_text(prompts: dict[str, str], prompt_name: str | None = None, prompt: str | None = None) -> str:
    """The text put before every text, as sentence-transformers decides it: ``prompt`` wins over the
    model's prompt called ``prompt_name`` (``prompts``); neither: none."""
    if prompt is not None:
        return prompt
    return prompts.get(prompt_name, "") if prompt_name else ""


def _normalized(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as ``torch.nn.functional.normalize`` (norms below 1e-12 count as 1e-12)."""
    return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32, copy=False)
