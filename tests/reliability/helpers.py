"""Helpers shared by the reliability tier: tiny datasets, the CLI in-process and as real processes."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path



from conftest import invoke

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"




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


def small_beir(d: Path, docs: int = 40, queries: int = 8) -> Path:
    """A deterministic synthetic BEIR dataset small enough to encode in a blink."""
    import json

    topics = ["cats", "dogs", "rivers", "stars", "bread", "trains", "music", "glass"]
    corpus = "".join(
        json.dumps({"_id": f"d{i}", "title": topics[i % 8], "text": f"{topics[i % 8]} note {i} about {topics[(i * 3) % 8]}"}) + "\n"
        for i in range(docs)
    )
    qs = "".join(json.dumps({"_id": f"q{j}", "text": f"what about {topics[j % 8]}"}) + "\n" for j in range(queries))
    rels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{j}\td{j}\t1\n" for j in range(queries))
    return write_beir(Path(d), corpus, qs, rels)


def negmine_env(**extra) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def negmine_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "negmine.cli", *map(str, args)]


def run_negmine(*args, timeout=120, **env) -> subprocess.CompletedProcess:
    return subprocess.run(negmine_cmd(*args), env=negmine_env(**env), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def start_negmine(*args, **env) -> subprocess.Popen:
    """A real ``negmine`` process (its own session, so SIGKILL reaches only it)."""
    return subprocess.Popen(
        negmine_cmd(*args), env=negmine_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT, start_new_session=True,
    )


def wait_for_pause(proc: subprocess.Popen, timeout: float = 90) -> str:
    """Read the process's stderr until the NEGMINE_TEST_PAUSE_AT hook says it has stopped."""
    import selectors
    import time

    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(0.1):
            line = proc.stderr.readline()
            seen.append(line)
            if line.startswith("negmine-test: paused before renaming"):
                return line
            if line == "" and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"negmine never paused (rc={proc.poll()}):\n{''.join(seen)}")


def final_tables(run: Path) -> dict[str, str]:
    """Hashes of a run's tables and embeddings (everything but the manifest's timings and the lock;
    not the encoded chunks an unfinished embed keeps in a hidden ``.corpus.parts-*`` folder to resume)."""
    return {k: v for k, v in tree_hashes(run).items() if k.endswith((".parquet", ".npy")) and ".corpus.parts-" not in k}


def temporaries(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in Path(run).rglob(".*.tmp"))


_REFERENCES: dict = {}


def reference_run(name: str, *args) -> Path:
    """An uninterrupted run (in-process, to spare a model load), made once per session and shared;
    removed when the session ends."""
    import atexit
    import shutil
    import tempfile

    if name not in _REFERENCES:
        folder = tempfile.mkdtemp(prefix=f"negmine-ref-{name}-")
        atexit.register(shutil.rmtree, folder, True)
        run = Path(folder) / "run"
        result = invoke(*[a if a != "{run}" else run for a in args])
        assert result.exit_code == 0, result.output
        _REFERENCES[name] = run
    return _REFERENCES[name]
