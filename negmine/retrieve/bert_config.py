"""Which BERT checkpoints negmine's own forward pass (negmine.retrieve.bert) runs, read from config.json alone.

Kept apart from the forward pass so a process that only asks (the backend choice, the OpenVINO
encoder) does not import torch.
"""

from __future__ import annotations


def supported(config: dict) -> bool:
    """A config.json negmine.retrieve.bert runs: an absolute-position, GELU, encoder-only BERT."""
    return (
        config.get("model_type") == "bert"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and config.get("hidden_act", "gelu") == "gelu"
        and not config.get("is_decoder", False)
        and not config.get("add_cross_attention", False)
        and not config.get("chunk_size_feed_forward", 0)
        and config.get("hidden_size", 0) % max(1, config.get("num_attention_heads", 1)) == 0
    )
