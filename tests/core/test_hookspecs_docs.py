"""Hooks and their documentation cannot drift apart (the datasette ``test_docs.py`` idea).

Every hookspec has a docstring and a section in docs/plugins.md that states its firstresult and
historic choices as declared; the page names no hook that does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runbook import hookspecs

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
SPEC_ATTR = f"{hookspecs.PROJECT}_spec"
HOOKS = {
    name: fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, SPEC_ATTR)
}
# ``runbook_`` words that are not hooks: the first-party plugin modules under plugins/.
PACKAGES = {p.name for p in ROOT.glob("plugins/*/runbook_*") if p.is_dir()}


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^### `(runbook_\w+)`\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def unknown_hooks(text: str) -> set[str]:
    """``runbook_...`` names in the page that are neither hooks nor plugin packages."""
    mentioned = set(sections(text)) | set(re.findall(r"\brunbook_[a-z_]+\b", text))
    return mentioned - set(HOOKS) - PACKAGES


def test_there_are_hooks():
    assert {"runbook_run_stores", "runbook_event", "runbook_resources"} <= set(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_docstring(name):
    doc = HOOKS[name].__doc__
    assert doc and len(doc.strip()) > 20, f"{name} needs a docstring saying when it runs"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_documented_with_its_choices(name):
    found = sections(DOC.read_text())
    assert name in found, f"docs/plugins.md has no '### `{name}`' section"
    options = getattr(HOOKS[name], SPEC_ATTR)
    text = " ".join(found[name].split())
    for option in ("firstresult", "historic"):
        said = "yes" if options.get(option) else "no"
        assert f"{option}: {said}" in text, f"{name}: the page must say '{option}: {said}'"
    assert "called" in text, f"{name}: the page must say when it is called"


def test_docs_name_no_hook_that_does_not_exist():
    assert unknown_hooks(DOC.read_text()) == set()


def test_the_check_catches_a_made_up_hook():
    text = DOC.read_text() + "\n### `runbook_made_up`\n\nAlso see `runbook_step_finshed`.\n"
    assert unknown_hooks(text) == {"runbook_made_up", "runbook_step_finshed"}
