"""Importing a runbook and the ``runbookconf.py`` files above it, by path, as pytest imports test
modules and conftests: any failure is one ``DefinitionError`` naming the file and the line."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from runbook.definition import ResourceDef
from runbook.errors import DefinitionError
from runbook.markers import RESOURCE_ATTR

CONF_NAME = "runbookconf.py"
ROOT_MARKERS = ("pyproject.toml", "runbook.toml", ".git")


def import_path(path: Path, name: str) -> ModuleType:
    """Import the file at ``path`` as module ``name`` (its folder first on ``sys.path``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError("not a Python module", file=str(path))
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # sibling imports work, as in pytest's prepend mode
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DefinitionError:
        sys.modules.pop(name, None)
        raise
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise DefinitionError(f"syntax error: {exc.msg}", file=str(path), line=exc.lineno) from None
    except SystemExit as exc:  # a runbook deciding at import that the CLI should exit: refused
        sys.modules.pop(name, None)
        raise DefinitionError(
            f"import failed: the module called sys.exit({exc.code!r}) while being imported",
            file=str(path),
            line=_line_in(path, exc),
        ) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise DefinitionError(
            f"import failed: {type(exc).__name__}: {exc}", file=str(path), line=_line_in(path, exc)
        ) from None
    return module


def _line_in(path: Path, exc: BaseException) -> int | None:
    """The last line of ``path`` the traceback of ``exc`` went through."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line


def find_conftests(folder: Path) -> list[Path]:
    """``runbookconf.py`` files from the project root down to ``folder`` (outermost first)."""
    found: list[Path] = []
    for directory in [folder, *folder.parents]:
        candidate = directory / CONF_NAME
        if candidate.is_file():
            found.append(candidate)
        if any((directory / marker).exists() for marker in ROOT_MARKERS):
            break
    return list(reversed(found))


def resources_of(module: ModuleType, origin: str) -> dict[str, ResourceDef]:
    """The ``@resource`` functions a module defines, by resource name."""
    out: dict[str, ResourceDef] = {}
    for value in vars(module).values():
        spec = getattr(value, RESOURCE_ATTR, None)
        if spec is not None and callable(value):
            out[spec.name] = ResourceDef(spec.name, value, origin, spec.line)
    return out
