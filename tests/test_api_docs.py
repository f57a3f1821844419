"""docs/api.md is generated from the docstrings: it is never older than the code it describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_api_reference_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, "docs/_api.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"{proc.stderr.strip()}\n(regenerate: {Path(sys.executable).name} docs/_api.py, "
        "then commit docs/api.md)"
    )


def test_check_reports_a_stale_page(tmp_path: Path) -> None:
    """--check compares the page it would write with the one on disk; it never writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_api", ROOT / "docs" / "_api.py")
    assert spec is not None and spec.loader is not None
    api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(api)
    api.PAGE = tmp_path / "api.md"
    api.PAGE.write_text("# API reference\n\nold\n")
    assert api.main(["--check"]) == 1
    assert api.PAGE.read_text() == "# API reference\n\nold\n"
    assert api.main([]) == 0 and api.main(["--check"]) == 0
