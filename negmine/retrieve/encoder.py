"""A sentence-transformers model of the common layout, run without sentence-transformers.

Most bi-encoders on the hub (all-MiniLM, bge, e5, gte, …) are saved by sentence-transformers as
Transformer → Pooling (mean, CLS or max) → Normalize. For those, :class:`PlainEncoder` runs the
transformer — negmine's own BERT forward pass (negmine/bert.py) where the checkpoint is a plain BERT,
transformers' AutoModel otherwise — with transformers' tokenizer, and applies the pooling and
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

    if bert.supported(layout["model_config"]):
        weights = layout["fetch"]("model.safetensors")
        if weights is not None:
            model = bert.load(weights, layout["model_config"], dtype)
            if model is not None:
                return model
    from transformers import AutoModel

    return AutoModel.from_pretrained(name_or_path, **({} if dtype is None else {"dtype": dtype}))


class PlainEncoder:
    """The part of ``SentenceTransformer`` that negmine's encoding uses, for a plain layout."""

    def __init__(self, name_or_path: str, layout: dict, device: str | None = None, dtype=None, backbone=None):
        """``backbone``: the transformer, already loaded (negmine.retrieve.openvino_bert.OpenVINOBert), called as
        negmine's BERT is; by default negmine's BERT or transformers' AutoModel in ``dtype``."""
        import torch
        from transformers import AutoTokenizer

        from negmine.retrieve.bert import Bert
        from negmine.retrieve.device import default_device

        self.auto_model = backbone if backbone is not None else _backbone(str(name_or_path), layout, dtype)
        self.own_bert = backbone is not None or isinstance(self.auto_model, Bert)
        self.kind = "openvino" if backbone is not None else "negmine-bert" if self.own_bert else "transformers"
        limit = layout["max_seq_length"]
        if limit is None:  # as sentence-transformers: the tokenizer's limit, capped by the positions the model has
            self.tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
            positions = layout["model_config"].get("max_position_embeddings")
            if positions and positions > 0:
                self.tokenizer.model_max_length = min(self.tokenizer.model_max_length, positions)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), model_max_length=limit)
        self.pooling = layout["pooling"]
        self.normalize = layout["normalize"]
        self.prompts = layout["prompts"]
        self.dimension = layout["dimension"] or layout["model_config"].get("hidden_size")
        self.tokenizer_kwargs: dict = {}
        if not self.own_bert:
            self.auto_model.eval()
        self.device = torch.device(device or default_device())
        if backbone is None:
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

    def encode_batches(self, texts: list[str], batches: list[list[int]], prompt: str = "", on_batch=None) -> np.ndarray:
        """Normalised float32 embeddings of ``texts`` encoded in ``batches`` (lists of positions), by a backbone
        with ``run_batches`` (negmine.retrieve.openvino_bert.OpenVINOBert): the next batches are tokenised and
        the finished ones pooled while the backbone runs."""

        def tokenized():
            for batch in batches:
                yield batch, self._features([prompt + texts[i] for i in batch], "np")

        out = np.empty((len(texts), self.get_embedding_dimension()), dtype=np.float32)
        # pooled and normalised with numpy: torch's worker threads would compete with the backbone's for the cores
        for batch, hidden, mask in self.auto_model.run_batches(tokenized()):
            emb = _normalized(self._pool_numpy(hidden, mask))
            out[batch] = _normalized(emb) if self.normalize else emb
            malloc_trim()  # the finished batch's buffers back to the system, as the torch path does
            if on_batch:
                on_batch(len(batch))
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


def prompt_text(prompts: dict[str, str], prompt_name: str | None = None, prompt: str | None = None) -> str:
    """The text put before every text, as sentence-transformers decides it: ``prompt`` wins over the
    model's prompt called ``prompt_name`` (``prompts``); neither: none."""
    if prompt is not None:
        return prompt
    return prompts.get(prompt_name, "") if prompt_name else ""


def _normalized(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as ``torch.nn.functional.normalize`` (norms below 1e-12 count as 1e-12)."""
    return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32, copy=False)
