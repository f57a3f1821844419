"""Every ``python`` block in docs/ runs in a test, or says it is only a listing.

A page's examples are run by its own docs test (tests/**/test_docs*.py). That test either runs
every block of the page (``ALL``) or the blocks tagged ``# runbook: X.py`` / ``# test: X.py`` /
``# script: X.py`` (``TAGGED``). A block that cannot run alone (a fragment, a signature) is marked
with ``<!-- listing -->`` on the line before it. This test keeps the pages and that promise true.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"(<!-- listing -->\n)?```python\n(.*?)```", re.S)
TAG = re.compile(r"^# (runbook|test|script): \S+\.py\n")

# page -> (how its docs test runs it, the test file that does)
RUN_BY: dict[str, tuple[str, str]] = {
    "audit.md": ("ALL", "tests/audit/test_docs.py"),
    "locks.md": ("ALL", "tests/locks/test_docs_locks.py"),
    "notifications.md": ("ALL", "tests/notify/test_docs_notifications.py"),
    "plugins.md": ("ALL", "tests/core/test_docs_plugins.py"),
    "runbooks.md": ("TAGGED", "tests/core/test_docs_examples.py"),
    "testing.md": ("TAGGED", "tests/core/test_docs_examples.py"),
    "python-api.md": ("TAGGED", "tests/core/test_docs_examples.py"),
    "strategies.md": ("TAGGED", "tests/strategies/test_docs_strategies.py"),
    "probes.md": ("TAGGED", "tests/test_docs_probes.py"),
}

PAGES = sorted(p.name for p in DOCS.glob("*.md"))


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs_or_is_a_listing(page: str) -> None:
    mode, test_file = RUN_BY.get(page, ("NONE", ""))
    if test_file:
        assert (DOCS.parent / test_file).read_text().count(page) >= 1, (
            f"{test_file} is said to run {page}'s examples but never names the page"
        )
    unrun = []
    for listing, body in BLOCK.findall((DOCS / page).read_text()):
        if listing:
            continue
        if mode == "ALL" or (mode == "TAGGED" and TAG.match(body)):
            continue
        unrun.append(body.splitlines()[0] if body.strip() else "(empty block)")
    assert not unrun, (
        f"docs/{page}: python blocks no test runs (tag them, run them in {test_file or 'a test'},"
        f" or mark them <!-- listing -->): {unrun}"
    )
