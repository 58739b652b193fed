"""Helpers shared by the reliability tier: tiny datasets, the CLI in-process and as real processes."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from negmine.cli import app

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"
runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (folders by their files), for "left exactly as it was"."""
    root = Path(root)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_beir(d: Path, corpus: str | bytes, queries: str | bytes, qrels: str | bytes) -> Path:
    (d / "qrels").mkdir(parents=True, exist_ok=True)
    for name, content in (("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels/train.tsv", qrels)):
        data = content.encode() if isinstance(content, str) else content
        (d / name).write_bytes(data)
    return d


GOOD_CORPUS = (
    '{"_id": "d1", "title": "Cats", "text": "Cats purr."}\n'
    '{"_id": "d2", "title": "", "text": "Dogs bark."}\n'
    '{"_id": "d3", "text": "Birds sing."}\n'
)
GOOD_QUERIES = '{"_id": "q1", "text": "what purrs"}\n{"_id": "q2", "text": "what barks"}\n'
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


def negmine_env(**extra) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def negmine_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "negmine.cli", *map(str, args)]


def run_negmine(*args, timeout=120, **env) -> subprocess.CompletedProcess:
    return subprocess.run(negmine_cmd(*args), env=negmine_env(**env), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
