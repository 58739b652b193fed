"""The run directory: its manifest, its lock, and stage bookkeeping (docs/data-contract.md, the run directory).

``manifest.json`` keeps, for every stage, its config, the sha256 of its inputs and outputs, row
counts, wall time, peak memory and package versions. :meth:`Run.is_fresh` says whether a stage
can be skipped: same config, same input hashes, and outputs still on disk with the recorded hashes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from negmine import __version__
from negmine.errors import BadInputError, OutputError, RunLockedError
from negmine.io import clean_temporaries, file_sha256, write_json
from negmine.schemas import SCHEMA_VERSION

MANIFEST = "manifest.json"
LOCK = ".negmine.lock"
_VERSIONED = ("pyarrow", "numpy", "torch", "transformers", "tokenizers", "openvino", "sentence_transformers", "faiss", "pyserini", "bm25s", "duckdb")


def package_versions() -> dict[str, str]:
    """Versions of negmine and of the heavy libraries this process has already imported."""
    versions = {"negmine": __version__, "python": sys.version.split()[0]}
    for name in _VERSIONED:
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions


def hash_paths(paths: list[Path], base: Path | None = None) -> dict[str, str]:
    """sha256 of each file; a folder hashes as the sorted hashes of the files under it.

    Keys are paths relative to ``base`` where they lie under it (so a run directory can be
    moved), absolute otherwise.
    """
    hashes = {}
    for path in paths:
        path = Path(path)
        key = _key(path, base)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            joined = "".join(f"{p.relative_to(path)}:{file_sha256(p)};" for p in files)
            hashes[key] = hashlib.sha256(joined.encode()).hexdigest()
        else:
            hashes[key] = file_sha256(path)
    return hashes


def _key(path: Path, base: Path | None) -> str:
    resolved = path.resolve()
    if base is not None:
        with contextlib.suppress(ValueError):
            return str(resolved.relative_to(base.resolve()))
    return str(resolved)


@dataclass
class Measurement:
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0


@contextlib.contextmanager
def measure(interval: float = 0.05) -> Iterator[Measurement]:
    """Wall time and peak resident memory (sampled; JVM and native libraries included)."""
    import psutil

    proc = psutil.Process()
    result = Measurement()
    peak = [proc.memory_info().rss]
    stop = threading.Event()

    def sample():
        while not stop.wait(interval):
            peak[0] = max(peak[0], proc.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        result.wall_s = time.perf_counter() - start
        result.peak_rss_mb = peak[0] / 2**20


@dataclass
class Run:
    """A run directory. Create with :meth:`Run.open`; hold :meth:`lock` while writing."""

    path: Path
    manifest: dict = field(default_factory=dict)
    cleaned: list = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True) -> "Run":
        path = Path(path)
        if not path.exists():
            if not create:
                raise BadInputError(path, "run directory does not exist")
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise OutputError(path, exc) from None
        elif not path.is_dir():
            raise BadInputError(path, "run path exists and is not a directory")
        manifest_path = path / MANIFEST
        manifest = {"schema_version": SCHEMA_VERSION, "stages": {}}
        if manifest_path.exists():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise BadInputError(manifest_path, f"manifest is not valid JSON ({exc})") from None
            except OSError as exc:
                raise BadInputError(manifest_path, f"cannot read the manifest ({exc.strerror or exc})") from None
            version = manifest.get("schema_version") if isinstance(manifest, dict) else None
            if version != SCHEMA_VERSION:
                raise BadInputError(
                    manifest_path,
                    f"run directory has schema version {version!r}, this negmine writes version "
                    f"{SCHEMA_VERSION}; mine into a new --out directory",
                    field="schema_version",
                )
            if not isinstance(manifest.setdefault("stages", {}), dict):
                raise BadInputError(manifest_path, "expected an object of stages", field="stages")
        return cls(path=path, manifest=manifest)

    def file(self, name: str) -> Path:
        return self.path / name

    @contextlib.contextmanager
    def lock(self) -> Iterator["Run"]:
        """Exclusive lock on the run directory; a second negmine is refused, not queued.

        Once held, temporaries a killed run left behind are removed (nobody else can be writing them).
        The kernel releases the lock when the holder dies, even by SIGKILL.
        """
        try:
            handle = open(self.path / LOCK, "a+")
        except OSError as exc:
            raise OutputError(self.path / LOCK, exc) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(
                f"{self.path}: run directory is in use by another negmine (pid {holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            self.cleaned = clean_temporaries(self.path)
            yield self
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    def is_fresh(self, stage: str, config: dict, inputs: list[Path]) -> bool:
        entry = self.manifest["stages"].get(stage)
        if not entry or entry.get("config") != config:
            return False
        if entry.get("inputs") != hash_paths(inputs, self.path):
            return False
        outputs = entry.get("outputs", {})
        paths = [self.path / p for p in outputs]
        return all(p.exists() for p in paths) and hash_paths(paths, self.path) == outputs

    def record(
        self,
        stage: str,
        config: dict,
        inputs: list[Path],
        outputs: list[Path],
        measurement: Measurement,
        stats: dict | None = None,
    ) -> dict:
        entry = {
            "config": config,
            "inputs": hash_paths(inputs, self.path),
            "outputs": hash_paths(outputs, self.path),
            "wall_s": round(measurement.wall_s, 3),
            "peak_rss_mb": round(measurement.peak_rss_mb, 1),
            "stats": stats or {},
            "versions": package_versions(),
        }
        previous = self.manifest["stages"].get(stage)
        self.manifest["stages"][stage] = entry
        try:
            write_json(self.manifest, self.path / MANIFEST)
        except BaseException:  # the manifest on disk is unchanged: so is the one in memory
            if previous is None:
                del self.manifest["stages"][stage]
            else:
                self.manifest["stages"][stage] = previous
            raise
        return entry
