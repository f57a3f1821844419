"""Core test helpers: runbooks are real files in ``tmp_path``, loaded with ``runbook.load``."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

WriteRunbook = Callable[..., Path]


@pytest.fixture
def write_runbook(tmp_path: Path) -> WriteRunbook:
    """Write ``source`` (dedented) as ``tmp_path/<name>.py`` and return its path.

    ``tmp_path`` gets a ``pyproject.toml`` so the search for ``runbookconf.py`` stops there, as it
    would at a real project root, instead of wandering up into the machine's /tmp.
    """
    (tmp_path / "pyproject.toml").touch()

    def write(source: str, name: str = "rb", folder: Path | None = None) -> Path:
        target = (folder or tmp_path) / f"{name}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source))
        return target

    return write


@pytest.fixture
def store_url() -> str:
    """A store shared by every Runner of one test and by no other test."""
    return f"memory://core-{uuid.uuid4().hex}"
