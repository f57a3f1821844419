"""Paths inside provider URLs: relative to the project root, not to the cwd.

So ``runbook exec`` and ``runbook approve`` started from different folders of one project share
one store. ``RUNBOOK_STORE`` is the exception: it is typed in a shell, so its relative paths are
relative to the cwd.
"""

from __future__ import annotations

import os
from pathlib import Path

from runbook.errors import ConfigError


def resolve_url(url: str, root: Path) -> str:
    """Anchor the relative path of a ``sqlite:///``, ``jsonl://``, ``file://`` or ``textfile://``
    URL at ``root``.

    ``sqlite:///rel.db`` has its path after the third slash (``sqlite:////abs.db`` is absolute);
    ``jsonl://rel`` and ``file://rel`` after the second. An empty path (``sqlite://``: "in the
    run store") and every other scheme are returned unchanged.
    """
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "sqlite":
        if not rest.startswith("/"):
            return url  # no path, or a host: the provider reports it
        lead, rest = "/", rest[1:]
    elif scheme.lower() in ("jsonl", "file", "textfile"):
        lead = ""
    else:
        return url
    path, sep, query = rest.partition("?")
    if not path or path.startswith("/"):
        return url
    anchored = Path(path).expanduser() if path.startswith("~") else root / path
    return f"{scheme}://{lead}{os.path.normpath(anchored)}{sep}{query}"


def env_store(url: str) -> str:
    """``RUNBOOK_STORE`` is typed in a shell, so its relative paths are relative to the cwd."""
    if "://" not in url:
        raise ConfigError(
            "RUNBOOK_STORE (environment): expected a URL such as sqlite:///path/runbook.db"
        )
    return resolve_url(url, Path.cwd())
