"""The negmine command line: a thin Typer layer over the stage runners (negmine.runners).

Each command opens the run directory, takes its lock, calls one runner (``mine`` runs the built-in
recipe, negmine.recipes.mine_recipe), prints a summary on stderr (or JSON on stdout with --json) and
maps NegmineError to its exit code (see negmine.errors).
"""

from negmine.cli import mining, tools  # noqa: F401  (registers the commands)
from negmine.cli.app import app


def main():
    app()


__all__ = ["app", "main"]
