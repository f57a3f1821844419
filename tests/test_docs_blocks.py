"""Every ``python`` block in README.md and docs/*.md runs in a test, or says it is a listing.

A reader copies a block and expects it to work, so a block is either executed by the test that
RUN_BY names for its page, or preceded by ``<!-- listing -->``: an illustrative fragment (a
plugin's module, a runbook excerpt that needs a real system) that no test can run as written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from runbook import Runner, load
from runbook.testing import FakeShell

ROOT = Path(__file__).resolve().parent.parent
LISTING = "<!-- listing -->"
BLOCK = re.compile(r"^(<!-- listing -->\n)?```python\n(.*?)^```", re.S | re.M)
MARKER = re.compile(r"# (runbook|test|script): \S+\.py\n")

# Every block of the page, listings included, is executed by the test; or only the first one:
ALL = frozenset({"all"})
FIRST = frozenset({"first"})
# A page -> (the test that executes its blocks, which ones). A set of kinds means the blocks whose
# first line is ``# KIND: NAME.py`` (runbook: a runbook file it runs; test: a pytest module it
# runs with pytester; script: a script it runs); an unmarked or other block there must be a
# listing.
RUN_BY: dict[str, tuple[str, frozenset[str]]] = {
    "README.md": ("tests/cli/test_examples_rollback.py", FIRST),
    "docs/analysis.md": ("tests/analysis/test_docs.py", ALL),
    "docs/audit.md": ("tests/audit/test_docs.py", ALL),
    "docs/configuration.md": ("tests/test_config.py", ALL),
    "docs/locks.md": ("tests/locks/test_docs_locks.py", ALL),
    "docs/notifications.md": ("tests/notify/test_docs_notifications.py", ALL),
    "docs/plugins.md": ("tests/core/test_docs_plugins.py", frozenset({"unlisted"})),
    "docs/probes.md": ("tests/test_docs_probes.py", frozenset({"runbook", "script"})),
    "docs/python-api.md": ("tests/core/test_docs_examples.py", frozenset({"runbook", "script"})),
    "docs/runbooks.md": ("tests/core/test_docs_examples.py", frozenset({"runbook"})),
    "docs/scaling.md": (
        "plugins/runbook-temporal/tests/test_docs_scaling.py",
        frozenset({"runbook"}),
    ),
    "docs/strategies.md": (
        "tests/strategies/test_docs_strategies.py",
        frozenset({"runbook", "test", "script"}),
    ),
    "docs/testing.md": ("tests/core/test_docs_examples.py", frozenset({"runbook", "test"})),
}


# Pages whose unmarked blocks this file runs itself (test_blocks_run_here): a block defining
# steps, probes or params is loaded as a runbook (its definitions are checked); any other is
# executed, with the names the page's prose gives it (the fixtures of a test, say).
RUN_HERE: dict[str, dict[str, Any]] = {
    "docs/approvals.md": {},
    "docs/python-api.md": {"Runner": lambda: Runner, "fake": FakeShell},
    "docs/runbooks.md": {},
    "docs/testing.md": {"fake_shell": FakeShell},
}


def pages() -> list[str]:
    found = ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
    return [page for page in found if "```python" in (ROOT / page).read_text()]


def is_run(page: str, listing: bool, body: str, first: bool) -> bool:
    if page in RUN_HERE and not listing and not MARKER.match(body):
        return True
    if page not in RUN_BY:
        return False
    _, which = RUN_BY[page]
    if which == ALL:
        return True
    if which == FIRST:
        return first
    if which == {"unlisted"}:
        return not listing
    marker = MARKER.match(body)
    return marker is not None and marker.group(1) in which and not listing


@pytest.mark.parametrize("page", pages())
def test_every_python_block_runs_or_is_a_listing(page: str) -> None:
    text = (ROOT / page).read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) == text.count("```python"), f"{page}: a ```python fence the test misread"
    orphans = [
        f"{page}:{text[: text.index(body)].count(chr(10)) + 1}: {body.splitlines()[0]!r}"
        for number, (listing, body) in enumerate(blocks)
        if not listing and not is_run(page, bool(listing), body, first=number == 0)
    ]
    assert not orphans, (
        "python blocks that no test runs: run them in the test RUN_BY names for the page, or "
        f"mark them with {LISTING} on the line before:\n" + "\n".join(orphans)
    )


@pytest.mark.parametrize("page", sorted(RUN_BY))
def test_each_registered_test_reads_its_page(page: str) -> None:
    test, _ = RUN_BY[page]
    path = ROOT / test
    assert path.is_file(), f"RUN_BY[{page!r}] names {test}, which does not exist"
    assert Path(page).name in path.read_text(), f"{test} never opens {page}"


def _here() -> list[tuple[str, int, str]]:
    found = []
    for page in RUN_HERE:
        for number, (listing, body) in enumerate(BLOCK.findall((ROOT / page).read_text())):
            if not listing and not MARKER.match(body):
                found.append((page, number, body))
    return found


@pytest.mark.parametrize(("page", "number", "body"), _here(), ids=lambda v: str(v)[:24])
def test_blocks_run_here(page: str, number: int, body: str, tmp_path: Path) -> None:
    if re.search(r"^@(step|probe)\b|\bparam\(", body, re.M):
        (tmp_path / "pyproject.toml").touch()
        path = tmp_path / f"block{number}.py"
        path.write_text(body)
        load(path)  # runs the module: definitions are checked, its asserts hold
    else:
        names = {name: make() for name, make in RUN_HERE[page].items()}
        exec(compile(body, f"{page}:block{number}", "exec"), names)
