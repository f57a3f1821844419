"""Builds docs/api.md, the API reference, from the public modules' ``__all__`` and docstrings.

``python docs/_api.py`` rewrites the page; ``python docs/_api.py --check`` exits 1 when the page
is stale, and tests/test_api_docs.py runs that check, so the reference cannot drift from the code.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

PAGE = Path(__file__).with_name("api.md")

# The public surface, in reading order: (module, one line on what it is for).
MODULES: tuple[tuple[str, str], ...] = (
    ("runbook", "writing a runbook and running it from Python"),
    ("runbook.result", "what a run returns"),
    ("runbook.errors", "every exception, with its exit code"),
    ("runbook.strategies", "deployment strategies that expand into steps"),
    ("runbook.analysis", "metric analysis for canaries"),
    ("runbook.inventory", "hosts and groups for fleets"),
    ("runbook.metrics", "run metrics for Prometheus"),
    ("runbook.tracing", "OpenTelemetry spans and trace propagation"),
    ("runbook.hookspecs", "every plugin hook"),
    ("runbook.coordinator", "a run's state and decisions, for drivers and executor plugins"),
    ("runbook.executors", "where one step attempt runs (the executor seam)"),
    ("runbook.testing", "fakes and the pytest plugin"),
)


def _public(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and _own(module, v)]
    return sorted(names, key=str.lower)


def _own(module: Any, value: Any) -> bool:
    return getattr(value, "__module__", None) == module.__name__ and (
        inspect.isclass(value) or inspect.isfunction(value)
    )


def _signature(obj: Any) -> str:
    try:
        try:
            text = str(inspect.signature(obj, eval_str=True))
        except NameError:  # an annotation only importable under TYPE_CHECKING
            text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    # A default that is a function or a sentinel object prints its address: keep the page stable.
    return re.sub(
        r"<(?:function|object|built-in function) ?([\w.]*)[^>]* at 0x[0-9a-f]+>", r"\1", text
    )


def _doc(obj: Any) -> str:
    doc = inspect.getdoc(obj)
    return doc.strip() if doc else ""


def _entry(name: str, obj: Any) -> list[str]:
    if inspect.isclass(obj):
        kind = "exception" if issubclass(obj, BaseException) else "class"
        lines = [f"### `{name}{_signature(obj)}` ({kind})", ""]
    elif callable(obj):
        lines = [f"### `{name}{_signature(obj)}`", ""]
    else:
        lines = [f"### `{name}`", ""]
    doc = _doc(obj)
    if doc and not (inspect.isclass(obj) and doc == _doc(object)):
        lines += [doc, ""]
    if inspect.isclass(obj):
        for attr, member in sorted(vars(obj).items()):
            if attr.startswith("_") or not (callable(member) or isinstance(member, property)):
                continue
            target = member.fget if isinstance(member, property) else member
            text = _doc(target)
            sig = "" if isinstance(member, property) else _signature(target)
            lines.append(f"- `{attr}{sig}`" + (f": {text.splitlines()[0]}" if text else ""))
        if lines[-1] != "":
            lines.append("")
    return lines


def build() -> tuple[str, float]:
    """The page, and the share of public names that have a docstring."""
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/_api.py`; a test fails when it is stale.",
        "The narrative pages (docs/*.md) explain the concepts; this page lists every public name.",
        "",
    ]
    documented = total = 0
    for module_name, purpose in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        out += [f"## `{module_name}`: {purpose}", ""]
        summary = _doc(module).split("\n\n")[0]
        if summary:
            out += [summary, ""]
        for name in _public(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):  # instances: see the module doc
                total += 1
                documented += bool(_doc(obj))
            out += _entry(name, obj)
    return "\n".join(out).rstrip() + "\n", (documented / total if total else 1.0)


def package_coverage(package: str = "runbook") -> tuple[int, int, list[str]]:
    """Every public function, class and method defined anywhere in the package: how many have a
    docstring, how many there are, and the missing ones (for ``--missing``)."""
    import pkgutil

    root = importlib.import_module(package)
    missing: list[str] = []
    documented = total = 0
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # an optional dependency missing: not part of this install's surface
            continue
        for name, value in vars(module).items():
            if name.startswith("_") or not _own(module, value):
                continue
            members = [(name, value)]
            if inspect.isclass(value):
                members += [
                    (f"{name}.{attr}", m)
                    for attr, m in vars(value).items()
                    if not attr.startswith("_") and inspect.isfunction(m)
                ]
            for qual, member in members:
                total += 1
                if inspect.getdoc(member) and member.__doc__:
                    documented += 1
                else:
                    missing.append(f"{info.name}.{qual}")
    return documented, total, missing


def main(argv: list[str]) -> int:
    if "--missing" in argv:
        documented, total, missing = package_coverage()
        print("\n".join(missing))
        print(f"package docstring coverage: {documented}/{total} = {documented / total:.0%}")
        return 0
    text, coverage = build()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            print("docs/api.md is stale: run `python docs/_api.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE} (public docstring coverage {coverage:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
