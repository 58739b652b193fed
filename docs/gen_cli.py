"""Render docs/cli.md, the CLI reference, from the Typer app itself.

    python docs/gen_cli.py            # rewrite docs/cli.md
    python docs/gen_cli.py --check    # exit 1 when docs/cli.md differs from what the app says

Every command, its usage line, and every option and argument with its help, default and
environment variable come from the app's own parameters (what `--help` prints), so the page can
only drift from the code when it is not regenerated; tests/test_docs.py fails when it has drifted.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "cli.md"

HEADER = """\
# CLI reference

Generated from the Typer app by `python docs/gen_cli.py`; `tests/test_docs.py` fails when this page
and the app differ. Every command also answers `--help`. Options that set a stage parameter show the
stage runner's default (the one default there is: the Python API uses the same).
"""


def _md(text: str) -> str:
    """Help text as Markdown table-cell text: pipes escaped, and outside code spans `<` and `>` too."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|").replace("\n", " ")


def _record(param, ctx) -> tuple[str, str]:
    """(names, help) of an option or argument, as `--help` shows them."""
    names, help_text = param.get_help_record(ctx) or (param.name, "")
    help_text = re.sub(r"\[default: \((.*?)\)\]", r"[default: \1]", help_text)
    return names, " ".join(help_text.split())


def render() -> str:
    import typer.main

    from negmine.cli import app

    group = typer.main.get_command(app)
    root = type_context(group, "negmine", None)
    out = [HEADER.rstrip("\n"), "", "```", group.get_usage(root), "```", "", " ".join((group.help or "").split()), ""]
    out += ["| command | what it does |", "|---|---|"]
    commands = [(name, cmd) for name, cmd in group.commands.items() if not cmd.hidden]
    for name, cmd in commands:
        first = (cmd.help or "").strip().split("\n\n")[0]
        out.append(f"| [`{name}`](#negmine-{name}) | {_md(' '.join(first.split()))} |")
    for name, cmd in commands:
        ctx = type_context(cmd, name, root)
        out += ["", f"## negmine {name}", ""]
        for paragraph in (cmd.help or "").strip().split("\n\n"):
            out += [" ".join(paragraph.split()), ""]
        out += ["```", cmd.get_usage(ctx), "```", "", "| option | description |", "|---|---|"]
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            names, help_text = _record(param, ctx)
            out.append(f"| `{names.replace('|', chr(92) + '|')}` | {_md(help_text)} |")
    return "\n".join(out) + "\n"


def type_context(command, name: str, parent):
    """A click context for ``command`` (Typer ships its own copy of click)."""
    try:
        from typer._click.core import Context
    except ImportError:  # Typer releases that use the click package
        from click import Context
    return Context(command, info_name=name, parent=parent, terminal_width=100, max_content_width=100)


def main(argv: list[str]) -> int:
    page = render()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != page:
            print(f"{PAGE} is out of date: run `python docs/gen_cli.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PAGE.parent.parent))  # this checkout's negmine, whatever else is installed
    sys.exit(main(sys.argv[1:]))
