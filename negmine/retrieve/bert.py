"""BERT's encoder forward pass in plain torch, for inference.

Most retrieval bi-encoders are BERT (all-MiniLM, bge-*-en-v1.5, e5-*-v2, gte-small/base,
arctic-embed-s/m, msmarco-MiniLM …). transformers' own BertModel brings imports with it that stay
resident (torch._dynamo, sympy, torch.distributed.tensor) and that an encoder in inference does not use; this
module computes the same operations in the same order — embeddings, then per layer the
scaled-dot-product attention with a boolean padding mask, the output projection and LayerNorm, the
GELU feed-forward and LayerNorm — from the same safetensors weights, and gives byte-identical hidden
states (tests/test_encoder.py compares it with sentence-transformers on every run).

:func:`negmine.retrieve.bert_config.supported` says which checkpoints it takes (without importing torch);
anything else is loaded with transformers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

_PREFIX = "bert."


class Bert:
    """``model(input_ids, attention_mask, token_type_ids)`` → the last hidden states (batch × length × hidden).

    The weights are a dict under transformers' names (``encoder.layer.0.attention.self.query.weight`` …)
    and the forward pass is functional (``F.linear``, ``F.layer_norm``: what ``nn.Linear`` and
    ``nn.LayerNorm`` call), so building it initialises nothing.
    """

    def __init__(self, config: dict, weights: dict[str, torch.Tensor]):
        self.weights = weights
        self.layers = config["num_hidden_layers"]
        self.head_size = config["hidden_size"] // config["num_attention_heads"]
        self.scaling = self.head_size**-0.5
        self.eps = config.get("layer_norm_eps", 1e-12)

    @staticmethod
    def names(config: dict) -> set[str]:
        """The weights the model needs."""
        names = {f"embeddings.{e}_embeddings.weight" for e in ("word", "position", "token_type")}
        names |= {"embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"}
        for i in range(config["num_hidden_layers"]):
            for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                         "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
                names |= {f"encoder.layer.{i}.{part}.weight", f"encoder.layer.{i}.{part}.bias"}
        return names

    def parameters(self):
        return iter(self.weights.values())

    def to(self, *args, **kwargs) -> "Bert":
        self.weights = {k: v.to(*args, **kwargs) for k, v in self.weights.items()}
        return self

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weights[name + ".weight"], self.weights[name + ".bias"])

    def _norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        weight = self.weights[name + ".weight"]  # its shape is the normalised one (a constant for a tracer)
        return F.layer_norm(x, weight.shape, weight, self.weights[name + ".bias"], self.eps)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                 always_mask: bool = False) -> torch.Tensor:
        """``always_mask``: apply the padding mask even where nothing is padded (same result; a graph
        exported from this call then takes any batch)."""
        w = self.weights
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = F.embedding(input_ids, w["embeddings.word_embeddings.weight"]) + F.embedding(token_type_ids, w["embeddings.token_type_embeddings.weight"])
        hidden = self._norm("embeddings.LayerNorm", hidden + F.embedding(positions, w["embeddings.position_embeddings.weight"]))
        mask = None  # as transformers: no mask when nothing is padded, else a boolean (batch, 1, length, length)
        if always_mask:
            mask = attention_mask.bool()[:, None, None, :]
        elif attention_mask is not None and not bool(attention_mask.all()):
            batch, length = attention_mask.shape
            mask = attention_mask.bool()[:, None, None, :].expand(batch, 1, length, length).contiguous()
        for i in range(self.layers):
            hidden = self._layer(f"encoder.layer.{i}.", hidden, mask)
        return hidden

    def _layer(self, p: str, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shape = (*hidden.shape[:-1], -1, self.head_size)
        q = self._linear(p + "attention.self.query", hidden).view(*shape).transpose(1, 2)
        k = self._linear(p + "attention.self.key", hidden).view(*shape).transpose(1, 2)
        v = self._linear(p + "attention.self.value", hidden).view(*shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=self.scaling, is_causal=False)
        out = out.transpose(1, 2).contiguous().reshape(*hidden.shape[:-1], -1).contiguous()
        attended = self._norm(p + "attention.output.LayerNorm", self._linear(p + "attention.output.dense", out) + hidden)
        inner = F.gelu(self._linear(p + "intermediate.dense", attended))
        return self._norm(p + "output.LayerNorm", self._linear(p + "output.dense", inner) + attended)


def load(weights: str | Path, config: dict, dtype: torch.dtype | None = None) -> Bert | None:
    """The model with the checkpoint's weights (in ``dtype``), or None where the checkpoint lacks one of them."""
    from safetensors import safe_open

    expected = Bert.names(config)
    state = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
            if name in expected:
                tensor = f.get_tensor(key)
                state[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    if set(state) != expected:
        return None
    return Bert(config, state)
