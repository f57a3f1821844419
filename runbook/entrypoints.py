"""The installed distributions' entry points of one group, read without ``importlib.metadata``.

Every ``runbook`` command loads the plugins' entry points (a plugin may add commands, sinks,
stores). Importing ``importlib.metadata`` costs ~20 ms (it brings ``email``, ``zipfile``,
``csv``, ``inspect``), more than the scan itself and a sixth of ``runbook --help``. The files
it would read are simple: each ``*.dist-info`` or ``*.egg-info`` folder in a ``sys.path``
folder may hold an ``entry_points.txt`` (the PyPA entry points format). This module reads them
as ``importlib.metadata.entry_points(group=...)`` does, in its order, with its rule that the
first distribution of a name on ``sys.path`` hides later ones (``tests/core/test_entrypoints.py``
compares the two). Where ``sys.path`` holds what a folder walk cannot read the same way (a zip
file, a legacy ``.egg``, a meta path finder that finds distributions of its own), it asks
``importlib.metadata`` instead. The distribution's name and version (for ``runbook plugins``
and errors) are read through ``importlib.metadata`` when first asked for.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

_INFO = (".dist-info", ".egg-info")
# ``importlib.metadata.EntryPoint.pattern``: ``module[:attr.attr] [extras]``.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


class EntryPoint:
    """One entry point: ``name = module:attr`` in ``group``, of the distribution in ``path``."""

    __slots__ = ("_dist", "group", "name", "path", "value")

    def __init__(self, name: str, value: str, group: str, path: str | None) -> None:
        self.name, self.value, self.group, self.path = name, value, group, path
        self._dist: Any = None

    def load(self) -> Any:
        """The object named, imported: ``importlib.metadata.EntryPoint.load``'s rule."""
        import importlib

        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"entry point {self.name!r}: malformed value {self.value!r}")
        obj: Any = importlib.import_module(match.group("module"))
        for attr in filter(None, (match.group("attr") or "").split(".")):
            obj = getattr(obj, attr)
        return obj

    @property
    def dist(self) -> Any:
        """The distribution (``importlib.metadata``'s), for its ``name`` and ``version``."""
        if self._dist is None and self.path is not None:
            from importlib import metadata
            from pathlib import Path

            self._dist = metadata.PathDistribution(Path(self.path))
        return self._dist

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"


def entry_points(group: str) -> list[EntryPoint]:
    """Every entry point of ``group``, as ``importlib.metadata.entry_points(group=group)``."""
    folders = _folders()
    if folders is None:
        return _from_importlib(group)
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for folder in folders:
        for info, name in _infos(folder):
            if name in seen:
                continue
            seen.add(name)
            found += parse(_read(os.path.join(info, "entry_points.txt")), group, info)
    return found


def _folders() -> list[str] | None:
    """The ``sys.path`` entries to walk, or None when one must be read by ``importlib.metadata``
    (a zip or ``.egg`` on the path, a meta path finder other than the standard one that finds
    distributions)."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if finder is not PathFinder and hasattr(finder, "find_distributions"):
            return None
    folders = []
    for entry in sys.path:
        folder = entry or "."
        if os.path.isdir(folder):
            if folder.lower().endswith(".egg"):
                return None
            folders.append(folder)
        elif os.path.exists(folder):  # a zip file (or an egg file)
            return None
    return folders


def _infos(folder: str) -> list[tuple[str, str]]:
    """(the metadata folder, its distribution's normalized name) in ``folder``, grouped by
    name in the order the names are first listed (``importlib.metadata``'s ``Lookup``)."""
    try:
        children = os.listdir(folder)
    except OSError:
        return []
    infos: dict[str, list[str]] = {}
    for child in children:
        low = child.lower()
        if low.endswith(_INFO):
            name = _normalize(low.rpartition(".")[0].partition("-")[0])
            infos.setdefault(name, []).append(os.path.join(folder, child))
    return [(path, name) for name, paths in infos.items() for path in paths]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        # no entry points, an egg-info file: skipped, as importlib.metadata skips them
        return ""


def parse(text: str, group: str, path: str | None = None) -> list[EntryPoint]:
    """The entry points of ``group`` in an ``entry_points.txt``: ``[group]`` sections of
    ``name = value`` lines; blank lines and ``#`` comments skipped, lines before any section
    ignored, as ``importlib.metadata`` does. A line of ``group`` without ``=`` is refused
    (``ValueError``); one in another group is skipped (``importlib.metadata`` would refuse the
    whole file: an unrelated package's broken file does not stop runbook)."""
    found = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section != group:  # before any section, or another group's (even malformed)
            continue
        name, eq, value = line.partition("=")
        if not eq:
            where = os.path.join(path, "entry_points.txt") if path else "entry_points.txt"
            raise ValueError(f"{where}: [{group}] has a line that is not `name = value`: {line!r}")
        found.append(EntryPoint(name.strip(), value.strip(), group, path))
    return found


def _from_importlib(group: str) -> list[EntryPoint]:
    from importlib import metadata

    found = []
    for ep in metadata.entry_points(group=group):
        one = EntryPoint(ep.name, ep.value, group, None)
        one._dist = ep.dist
        found.append(one)
    return found
