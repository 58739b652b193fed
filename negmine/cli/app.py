"""The Typer application and what every command shares: the error → exit-code mapping, the run lock, the summary."""

import json
import sys
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console

from negmine.errors import NegmineError

app = typer.Typer(
    name="negmine",
    help="Mine hard negatives for dense retrievers. Every stage reads and writes Parquet in a run directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"max_content_width": 120},
)
err = Console(stderr=True)


def guarded(fn: Callable[[], object]):
    """Run ``fn`` with its progress shown on stderr (negmine.progress: a bar on a terminal, log lines
    otherwise); a NegmineError prints one line and exits with its code (negmine.errors), Ctrl-C with 3."""
    from negmine import progress

    try:
        with progress.reporting(progress.reporter_for(err)):
            return fn()
    except NegmineError as exc:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]: outputs written so far are complete; rerun the same command to resume")
        raise typer.Exit(3) from None


def print_summary(results: list, as_json: bool, title: str) -> None:
    from negmine.summary import render, summary_dict

    if as_json:
        sys.stdout.write(json.dumps(summary_dict(results), indent=2, sort_keys=True) + "\n")
    else:
        render(err, results, title=title)


def with_run(run_dir: Path, body: Callable, as_json: bool, title: str):
    """Open the run directory, hold its lock while ``body(run)`` runs, then print the summary."""
    from negmine.rundir import Run

    def go():
        run = Run.open(run_dir)
        with run.lock():
            results = body(run)
        results = results if isinstance(results, list) else [results]
        print_summary(results, as_json, f"{title} — {run_dir}")
        return results

    return guarded(go)


def given(**values) -> dict:
    """The options the user gave (None means "not given": the runner's default applies)."""
    return {name: value for name, value in values.items() if value is not None}
