"""The README's promises: two set-up commands that CI runs, and a docs index that is complete."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    assert "./dev demo" in README and "./dev test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec \./dev test$", ci, re.MULTILINE)


def test_every_docs_page_is_indexed_and_every_link_resolves() -> None:
    links = set(re.findall(r"\]\((docs/[^)]+)\)", README))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= links, f"pages missing from the README index: {sorted(pages - links)}"
    assert all((ROOT / link).is_file() for link in links)


def test_the_layout_table_names_real_paths() -> None:
    for path in re.findall(r"^\| `([^`]+)`", README, re.MULTILINE):
        assert (ROOT / path.rstrip("/")).exists(), path
