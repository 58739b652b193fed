"""The documentation: the CLI reference matches the app, and README.md and docs/ speak to users.

- docs/cli.md is what docs/gen_cli.py renders from the Typer app today: a command or option added
  without regenerating the page fails here.
- No page speaks of the project's own development history (numbered milestones, sessions, scratch
  timings, commit hashes as evidence).
- No link or path in a page leads outside the repository (on a clone it would be broken), and every
  relative link resolves to a file that exists.
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_generated_from_the_app():
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == _generator().render(), "docs/cli.md differs from the app: run `python docs/gen_cli.py` and commit docs/cli.md"


def test_the_cli_reference_names_every_command_and_option():
    import typer.main

    from negmine.cli import app

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        section = page.split(f"\n## negmine {name}\n", 1)
        assert len(section) == 2, f"docs/cli.md has no section for `negmine {name}`"
        body = section[1].split("\n## ", 1)[0]
        for param in command.params:
            for flag in [*param.opts, *getattr(param, "secondary_opts", [])]:
                if flag.startswith("-"):
                    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", body), f"`negmine {name}` option {flag} is missing from docs/cli.md"


HISTORY = {
    "a numbered milestone": r"\bstops? \d+",
    "a milestone by position": r"\b(?:this|that|the) stop\b|\bstop before\b",
    "a work session": r"\bsessions?\b",
    "a scratch measurement": r"\bscratch\b",
    "a commit hash": r"\b[0-9a-f]{40}\b|\bcommit [0-9a-f]{7,}\b|\bgit history\b",
}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_speaks_of_the_projects_development_history(page):
    if not page.exists():
        pytest.skip(f"{page.name} does not exist")
    found = []
    for lineno, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        for what, pattern in HISTORY.items():
            for match in re.finditer(pattern, line, flags=re.IGNORECASE):
                found.append(f"{page.name}:{lineno}: {what}: {match.group(0)!r}")
    assert not found, "\n".join(found)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)|<a\s+href=\"([^\"]+)\"")
RELATIVE_PATH = re.compile(r"(?<![\w./])((?:\.\./)+[\w./-]*)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_leaves_the_repository(page):
    if not page.exists():
        pytest.skip(f"{page.name} does not exist")
    text = page.read_text(encoding="utf-8")
    bad = []
    targets = [a or b for a, b in LINK.findall(text)] + RELATIVE_PATH.findall(text)
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*://", target) and not target.startswith("file:"):
            continue  # a web address
        if target.startswith("#") or target.startswith("mailto:"):
            continue
        path = target.split("#", 1)[0]
        if target.startswith(("/", "file:", "~")) or re.match(r"[A-Za-z]:\\", target):
            bad.append(f"{target}: an absolute path")
            continue
        resolved = (page.parent / path).resolve()
        if not resolved.is_relative_to(ROOT):
            bad.append(f"{target}: outside the repository")
        elif not resolved.exists():
            bad.append(f"{target}: no such file in the repository")
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)
