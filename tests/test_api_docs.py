"""docs/api.md is generated from the docstrings: it is never stale, and it covers the API."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_api_reference_is_up_to_date():
    out = subprocess.run(
        [sys.executable, str(DOCS / "_api.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_every_name_runbook_exports_is_in_the_reference_with_a_docstring():
    api = runpy.run_path(str(DOCS / "_api.py"))
    text, coverage = api["build"]()
    import runbook

    for name in runbook.__all__:
        assert f"### `{name}" in text, name
    assert coverage == 1.0, "a public name has no docstring: see `python docs/_api.py`"


def test_the_check_fails_on_a_stale_page(tmp_path, monkeypatch):
    api = runpy.run_path(str(DOCS / "_api.py"))
    stale = tmp_path / "api.md"
    stale.write_text("# API reference\n\nold\n")
    api["main"].__globals__["PAGE"] = stale
    assert api["main"](["--check"]) == 1
