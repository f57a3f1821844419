"""Finding and reading the configuration file: which file applies, its TOML, its runbook table.

The nearest folder upwards with a ``runbook.toml``, or a ``pyproject.toml`` that has
``[tool.runbook]``, wins (``runbook.toml`` first within one folder); a ``pyproject.toml`` that does
not mention runbook is not even parsed, so another tool's broken file never fails a run. What the
table holds is checked by ``runbook.config.validate``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from runbook.config.validate import kind_of, quoted_key
from runbook.errors import ConfigError

CONFIG_FILE = "runbook.toml"
PYPROJECT = "pyproject.toml"


def project_root(start: Path) -> Path:
    """The nearest folder upwards with a pyproject.toml, runbook.toml or .git, else ``start``."""
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ("pyproject.toml", "runbook.toml", ".git")):
            return folder
    return start


def discover(start: Path) -> tuple[Path, dict[str, Any], str] | None:
    """The file that applies to ``start``, its runbook table and that table's dotted prefix."""
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            selected = select(candidate, parse(candidate, read(candidate)))
            assert selected is not None  # a runbook.toml always selects something
            return candidate, *selected
        candidate = folder / PYPROJECT
        if candidate.is_file():
            text = read(candidate)
            if "runbook" not in text:  # not ours; don't fail on some other tool's broken file
                continue
            selected = select(candidate, parse(candidate, text))
            if selected is not None:
                return candidate, *selected
    return None


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        where = f"{path}:{match.group(1)}" if match else str(path)
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None


def select(path: Path, data: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The runbook table of a parsed file and its dotted prefix; None: a pyproject without one."""
    tool = data.get("tool")
    if path.name == PYPROJECT:
        if not isinstance(tool, dict) or "runbook" not in tool:
            return None
    elif "tool" not in data:
        return data, ""  # runbook.toml with top-level keys
    else:
        others = sorted(set(data) - {"tool"})
        if others:
            raise ConfigError(
                f"{path}: {others[0]}: use either top-level keys or a "
                "[tool.runbook] table in runbook.toml, not both"
            )
        if not isinstance(tool, dict) or set(tool) != {"runbook"}:
            extra = sorted(set(tool) - {"runbook"}) if isinstance(tool, dict) else []
            key = f"tool.{quoted_key(extra[0])}" if extra else "tool"
            raise ConfigError(f"{path}: unknown key {key}: runbook.toml only holds [tool.runbook]")
    table = tool["runbook"]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tool.runbook: expected a table, got {kind_of(table)}")
    return table, "tool.runbook"
