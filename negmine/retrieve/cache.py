"""negmine's cache folder, where what is derived once per model is kept between runs: the OpenVINO
encoder's exported graphs (``openvino/``, negmine.retrieve.openvino_encoder) and the tokenizers
transformers built (``tokenizers/``, negmine.retrieve.tokenizer)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NEGMINE_CACHE_DIR"


def cache_root() -> Path:
    """negmine's cache folder: ``NEGMINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/negmine``, else ``~/.cache/negmine``."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "negmine"
