"""Project configuration: ``runbook.toml``, or ``[tool.runbook]`` in ``pyproject.toml``.

Strict on purpose. A typo in a safety setting (``protecton = "strict"``) that fell back to the
default would leave prod less protected than its owners believe, so an unknown key or a value of
the wrong type is a ``ConfigError`` naming the file, the dotted key and, when one is close, the key
that was probably meant. Values are never echoed in type errors: a webhook URL is a secret.

Paths inside ``sqlite://``, ``jsonl://`` and ``file://`` URLs are relative to the project root (the
folder of the config file), not to the cwd, so ``runbook exec`` and ``runbook approve`` started
from different folders of one project share one store. See docs/configuration.md.

This module is the entry point (``load_config``, ``listed_plugins``) and re-exports the rest:

- ``runbook.config.model``: ``Config``, ``EnvConfig``, ``SinkConfig`` and the tables of keys;
- ``runbook.config.files``: which file applies, its TOML, its runbook table;
- ``runbook.config.validate``: a table checked and turned into a ``Config``;
- ``runbook.config.urls``: relative paths in URLs anchored at the project root;
- ``runbook.config.actor``: who is running this (``--as``, ``RUNBOOK_ACTOR``, git, the OS user).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from runbook.config.actor import GIT_TIMEOUT, resolve_actor
from runbook.config.files import CONFIG_FILE, PYPROJECT, discover, parse, project_root, read, select
from runbook.config.model import (
    DEFAULT_ENV,
    DURABILITY,
    ENV_KEYS,
    PAUSED_LEASE,
    PROTECTION_FLAGS,
    SINK_KEYS,
    TOP_KEYS,
    Config,
    EnvConfig,
    SinkConfig,
)
from runbook.config.urls import resolve_url
from runbook.config.validate import Builder
from runbook.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ENV",
    "DURABILITY",
    "ENV_KEYS",
    "GIT_TIMEOUT",
    "PAUSED_LEASE",
    "PROTECTION_FLAGS",
    "PYPROJECT",
    "SINK_KEYS",
    "TOP_KEYS",
    "Config",
    "EnvConfig",
    "SinkConfig",
    "listed_plugins",
    "load_config",
    "resolve_actor",
    "resolve_url",
]


def load_config(
    start: Path,
    *,
    explicit: Path | None = None,
    environ: Mapping[str, str] | None = None,
    extra_keys: Iterable[str] = (),
) -> Config:
    """Read the configuration that applies to ``start`` (a runbook's folder, or the cwd).

    ``explicit`` (``--config``) skips the search. Otherwise the nearest folder upwards with a
    ``runbook.toml``, or a ``pyproject.toml`` that has ``[tool.runbook]``, wins; ``runbook.toml``
    first within one folder. No file at all gives the defaults, rooted at the project root: the
    nearest folder upwards with a ``pyproject.toml``, ``runbook.toml`` or ``.git`` (else
    ``start``), so ``runbook exec runbooks/x.py`` and ``runbook runs`` from the project's top
    folder find the same store.
    """
    environ = os.environ if environ is None else environ
    start = Path(start).expanduser().absolute()
    if start.is_file():
        start = start.parent
    path: Path | None
    if explicit is not None:
        path = Path(explicit).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file not found")
        selected = select(path, parse(path, read(path)))
        if selected is None:
            raise ConfigError(f"{path}: has no [tool.runbook] table")
        table, prefix = selected
    else:
        found = discover(start)
        path, table, prefix = found if found else (None, {}, "")
    root = path.parent if path else project_root(start)
    return Builder(path, prefix, root).build(table, environ, frozenset(extra_keys))


def listed_plugins(start: Path, *, explicit: Path | None = None) -> list[str]:
    """The ``plugins = [...]`` of the configuration that applies, read without validating.

    Plugins named there may declare config keys of their own (``runbook_config_keys``), so they
    must be imported before the configuration can be validated.
    """
    start = Path(start).expanduser().absolute()
    if start.is_file():
        start = start.parent
    if explicit is not None:
        path = Path(explicit).expanduser().absolute()
        selected = select(path, parse(path, read(path))) if path.is_file() else None
        table = selected[0] if selected else {}
    else:
        found = discover(start)
        table = found[1] if found else {}
    listed = table.get("plugins", [])
    return [p for p in listed if isinstance(p, str)] if isinstance(listed, list) else []
