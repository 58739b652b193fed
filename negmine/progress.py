"""Progress of the long steps (encoding, BM25 indexing and search, dense search, rescoring, training,
evaluation): items done of the total, the rate and the time left.

Library code reports through :func:`track`; nothing is shown and almost nothing is done unless a
reporter listens. The CLI installs one for every command: a rich progress bar when stderr is a
terminal, otherwise a log line on stderr at most every ``NEGMINE_PROGRESS_INTERVAL`` seconds
(default 10), for CI and scheduler logs::

    negmine embed: 2,048/5,183 docs (39.5%), 118.4 docs/s, 0:00:26 left

The Python API prints nothing unless asked::

    import negmine.progress

    with negmine.progress.shown():           # a bar on a terminal, log lines otherwise
        negmine.mine("sample_data", "runs/x")

A step is labelled with the name of the stage it runs in, as the summary prints it (``embed``,
``dense``, ``rescore.dense`` ...), with the step after it where a stage has several (``bm25 index``,
``bm25 search``). Progress never changes what a stage computes or writes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time

INTERVAL_ENV = "NEGMINE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0

_REPORTER: contextvars.ContextVar = contextvars.ContextVar("negmine_progress_reporter", default=None)
_STAGE: contextvars.ContextVar = contextvars.ContextVar("negmine_progress_stage", default="")
_PREFIX: contextvars.ContextVar = contextvars.ContextVar("negmine_progress_prefix", default="")


class Tracker:
    """One step under way: ``advance(n)`` after ``n`` more items, ``update_to(done)`` to set the count."""

    active = True

    def __init__(self, label: str, total: int | None, unit: str, reporter):
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.started = time.monotonic()
        self._reporter = reporter
        self.handle = None  # the reporter's own record of the step

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._reporter.update(self)

    def update_to(self, done: int) -> None:
        if done != self.done:
            self.done = done
            self._reporter.update(self)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float | None:
        elapsed = self.elapsed
        return self.done / elapsed if self.done and elapsed > 0 else None

    @property
    def left(self) -> float | None:
        """Seconds left at the rate so far (None until something is done or without a total)."""
        rate = self.rate
        return None if rate is None or self.total is None else max(self.total - self.done, 0) / rate


class _Silent:
    """What :func:`track` gives when nobody listens: every call does nothing."""

    active = False
    done = 0

    def advance(self, n: int = 1) -> None:
        pass

    def update_to(self, done: int) -> None:
        pass


SILENT = _Silent()


def listening() -> bool:
    return _REPORTER.get() is not None


def label(step: str = "") -> str:
    """The current stage's name (with a refresh round's prefix), then ``step``."""
    name = _PREFIX.get() + _STAGE.get()
    return f"{name} {step}".strip() if step else (name or "negmine")


@contextlib.contextmanager
def track(total: int | None, unit: str, step: str = ""):
    """A step of ``total`` ``unit`` (docs, queries, pairs, steps ...): yields a :class:`Tracker`, or a
    tracker that does nothing when no reporter listens."""
    reporter = _REPORTER.get()
    if reporter is None:
        yield SILENT
        return
    tracker = Tracker(label(step), total, unit, reporter)
    reporter.start(tracker)
    ok = False
    try:
        yield tracker
        ok = True
    finally:
        reporter.finish(tracker, ok)


@contextlib.contextmanager
def stage(name: str):
    """Label the steps inside with stage ``name`` (the stage runners do this for the work they run)."""
    token = _STAGE.set(name)
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter.stage(label())
    try:
        yield
    finally:
        _STAGE.reset(token)


@contextlib.contextmanager
def prefix(text: str):
    """Put ``text`` before every stage name inside (a refresh round's ``round-1/``)."""
    token = _PREFIX.set(text)
    try:
        yield
    finally:
        _PREFIX.reset(token)


@contextlib.contextmanager
def reporting(reporter):
    """Send the progress of everything inside to ``reporter`` (a :class:`LogReporter`, :class:`RichReporter`
    or anything with their methods)."""
    token = _REPORTER.set(reporter)
    try:
        with reporter:
            yield reporter
    finally:
        _REPORTER.reset(token)


def reporter_for(console=None, stream=None):
    """A rich bar on ``console`` when it is a terminal, else log lines on ``stream`` (default stderr)."""
    if console is not None and console.is_terminal and not console.is_dumb_terminal:
        return RichReporter(console)
    return LogReporter(stream)


@contextlib.contextmanager
def shown(console=None):
    """Show progress on stderr while the block runs: a rich bar on a terminal, log lines otherwise."""
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    with reporting(reporter_for(console)) as reporter:
        yield reporter


def interval() -> float:
    """Seconds between two log lines of a step (``NEGMINE_PROGRESS_INTERVAL``, default 10)."""
    try:
        return max(float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)), 0.0)
    except ValueError:
        return DEFAULT_INTERVAL


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def figures(tracker: Tracker, finished: bool = False) -> str:
    """``2,048/5,183 docs (39.5%), 118.4 docs/s, 0:00:26 left`` (``done in`` once finished)."""
    text = f"{tracker.done:,}"
    if tracker.total is not None:
        text += f"/{tracker.total:,} {tracker.unit}"
        if tracker.total:
            text += f" ({tracker.done / tracker.total:.1%})"
    else:
        text += f" {tracker.unit}"
    rate = tracker.rate
    text += f", {rate:,.1f} {tracker.unit}/s" if rate is not None else ""
    if finished:
        return text + f", done in {clock(tracker.elapsed)}"
    left = tracker.left
    return text + (f", {clock(left)} left" if left is not None else "")


def line(tracker: Tracker, finished: bool = False) -> str:
    """A log line: ``negmine embed: 2,048/5,183 docs (39.5%), 118.4 docs/s, 0:00:26 left``."""
    return f"negmine {tracker.label}: {figures(tracker, finished)}"


class LogReporter:
    """One line per step at most every ``every`` seconds while it runs, and one when a step that logged
    (or ran longer than ``every``) finishes; nothing for short steps."""

    def __init__(self, stream=None, every: float | None = None):
        self.stream = stream
        self.every = interval() if every is None else every
        self._last: dict[int, float] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def stage(self, name: str) -> None:
        pass

    def start(self, tracker: Tracker) -> None:
        self._last[id(tracker)] = tracker.started

    def update(self, tracker: Tracker) -> None:
        now = time.monotonic()
        if now - self._last.get(id(tracker), tracker.started) >= self.every:
            self._last[id(tracker)] = now
            self._write(line(tracker))

    def finish(self, tracker: Tracker, ok: bool) -> None:
        last = self._last.pop(id(tracker), tracker.started)
        if ok and (last != tracker.started or tracker.elapsed >= self.every):
            self._write(line(tracker, finished=True))


class RichReporter:
    """A rich bar per step (items done / total, rate, time left) under a line naming the running stage;
    cleared when the command ends."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[figures]}"), TimeElapsedColumn(),
            console=console, transient=True,
        )
        self._stage = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()
        return False

    def stage(self, name: str) -> None:
        if self._stage is None:
            self._stage = self.progress.add_task(name, total=None, figures="")
        else:
            self.progress.update(self._stage, description=name)

    def start(self, tracker: Tracker) -> None:
        tracker.handle = self.progress.add_task(tracker.label, total=tracker.total, figures=figures(tracker))

    def update(self, tracker: Tracker) -> None:
        self.progress.update(tracker.handle, completed=tracker.done, figures=figures(tracker))

    def finish(self, tracker: Tracker, ok: bool) -> None:
        self.progress.remove_task(tracker.handle)
