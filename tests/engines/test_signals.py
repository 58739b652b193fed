"""A JVM in the process (pyserini's BM25) keeps its crash-signal handlers when Ray starts and stops.

Without them the JVM's deliberate faults (null checks, safepoint polls) kill the process at a later,
unrelated point: BM25, then the Ray engine, then BM25 again segfaulted.
"""

import subprocess
import sys

from conftest import ROOT, SAMPLE

SCRIPT = f"""
import ray
from pathlib import Path
import tempfile
from negmine.engines import ray as engine_ray
from negmine.engines.signals import SIGNALS, installed
from negmine.rundir import Run
from negmine.runners import bm25_stage, ingest_stage

run = Run.open(Path(tempfile.mkdtemp()) / "run")
ingest_stage(run, {str(SAMPLE)!r})
bm25_stage(run, k=5)  # starts the JVM in this process
def handlers():
    return {{sig: action.handler for sig, action in installed().items()}}
jvm = handlers()
assert all(jvm[int(s)] not in (None, 0, 1) for s in SIGNALS[:2]), jvm  # the JVM's own SIGSEGV and SIGBUS handlers
engine_ray.connect("local")
assert handlers() == jvm, ("after ray.init", handlers(), jvm)
from negmine.engines.signals import handlers_kept
with handlers_kept():
    ray.shutdown()
assert handlers() == jvm, ("after ray.shutdown", handlers(), jvm)
for _ in range(3):
    bm25_stage(run, k=5, force=True)
print("ok")
"""


def test_the_jvm_keeps_its_signal_handlers_across_ray_init_and_shutdown():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
