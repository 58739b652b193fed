"""negmine's cache folder, where what is derived once per model is kept between runs: the OpenVINO
encoder's exported graphs (``openvino/``, negmine.retrieve.openvino_encoder) and the tokenizers
transformers built (``tokenizers/``, negmine.retrieve.tokenizer)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "NEGMINE_CACHE_DIR"


def cache_root() -> Path:
    """negmine's cache folder: ``NEGMINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/negmine``, else ``~/.cache/negmine``."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "negmine"


def publish(folder: Path, fill: Callable[[Path], None]) -> None:
    """``fill(tmp)`` writes a temporary folder beside ``folder``, which is then renamed to ``folder``: a
    reader sees the whole folder or none, however the writer ends. Where another process published
    ``folder`` first, theirs is kept (it holds the same thing). An OSError (a cache that cannot be
    written) is raised for the caller to decide on; the temporary folder is removed in every case."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        fill(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
