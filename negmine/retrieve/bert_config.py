"""Which checkpoints negmine's own forward pass (negmine.retrieve.bert) and its OpenVINO export
(negmine.retrieve.openvino_encoder) run, read from config.json alone.

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


# transformers architectures (config.json's model_type) that negmine exports to OpenVINO from AutoModel, each
# checked against sentence-transformers by tests/retrieve/test_backends.py; BERT checkpoints that
# :func:`supported` takes are exported from negmine's own forward pass instead
OPENVINO_ARCHITECTURES = ("bert", "distilbert", "mpnet", "roberta", "xlm-roberta")


def exportable(config: dict) -> bool:
    """A config.json whose encoder negmine runs on OpenVINO: one :func:`supported` takes, or an encoder-only
    model of :data:`OPENVINO_ARCHITECTURES`."""
    return supported(config) or (
        config.get("model_type") in OPENVINO_ARCHITECTURES and not config.get("is_decoder", False) and not config.get("add_cross_attention", False)
    )
