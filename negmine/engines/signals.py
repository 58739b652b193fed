"""Keep the crash-signal handlers a JVM installed when Ray starts or stops in the same process.

pyserini's BM25 runs Lucene in a JVM inside the negmine process. The JVM raises SIGSEGV and SIGBUS
on purpose in normal operation (implicit null checks, safepoint polls, memory-mapped index files)
and handles them itself. ``ray.init`` installs Ray's own crash handlers for those signals, and
``ray.shutdown`` resets some of them to the default action; after either, the JVM's next deliberate
fault kills the process (a segmentation fault at some later, unrelated point). So a process that
ran BM25 and then the Ray engine (``negmine mine --source hybrid --engine ray``, a notebook) would
crash. :func:`handlers_kept` puts back the handlers that were installed before.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from typing import Iterator

SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL)


class _SigAction(ctypes.Structure):  # glibc's struct sigaction on Linux (x86-64 and aarch64)
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def installed() -> dict[int, _SigAction]:
    """The current action of each of :data:`SIGNALS` (Linux; empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return {}
    libc, actions = _libc(), {}
    for sig in SIGNALS:
        action = _SigAction()
        if libc.sigaction(int(sig), None, ctypes.byref(action)) == 0:
            actions[int(sig)] = action
    return actions


@contextlib.contextmanager
def handlers_kept() -> Iterator[None]:
    """Run the body (``ray.init``, ``ray.shutdown``), then restore every crash-signal handler that was
    installed before it (a default or ignored action is left to whatever the body set)."""
    before = installed()
    try:
        yield
    finally:
        libc = _libc()
        for sig, action in before.items():
            if action.handler not in (None, 0, 1):  # SIG_DFL, SIG_IGN
                libc.sigaction(sig, ctypes.byref(action), None)
