"""No doc, README or example builds a shell command by interpolation (DESIGN 13): they are what
people copy, so they show the argv list or the quoted template, never ``shell(f"...")``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
# Calls whose command argument reaches a shell: shell(cmd), shell.unsafe(cmd), ssh(host, cmd).
COMMAND_ARG = {"shell": 0, "unsafe": 0, "ssh": 1}


def _interpolated(node: ast.expr) -> bool:
    """An f-string with fields, ``"...".format(...)``, ``"..." % x`` or ``"..." + x``."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "format" and isinstance(node.func.value, ast.Constant)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        strings = [
            n for n in (node.left, node.right) if isinstance(n, ast.Constant | ast.JoinedStr)
        ]
        return bool(strings) and not all(
            isinstance(n, ast.Constant) for n in (node.left, node.right)
        )
    return False


def offending_calls(source: str) -> list[int]:
    """Line numbers of shell/ssh calls whose command string is built by interpolation."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        # A fragment that is not a whole module: fall back to the obvious spelling.
        return [
            n
            for n, line in enumerate(source.splitlines(), 1)
            if re.search(r"\b(shell|unsafe)\(\s*f[\"']|\bssh\([^,()]+,\s*f[\"']", line)
        ]
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        index = COMMAND_ARG.get(name or "")
        if index is None or len(node.args) <= index:
            continue
        if _interpolated(node.args[index]):
            lines.append(node.lineno)
    return lines


def _sources() -> list[tuple[str, str]]:
    found = [("README.md", (ROOT / "README.md").read_text())]
    for page in sorted((ROOT / "docs").glob("*.md")):
        found.append((f"docs/{page.name}", page.read_text()))
    for readme in sorted((ROOT / "plugins").glob("*/README.md")):
        found.append((str(readme.relative_to(ROOT)), readme.read_text()))
    for example in sorted((ROOT / "runbooks").rglob("*.py")):
        found.append((str(example.relative_to(ROOT)), "```python\n" + example.read_text() + "```"))
    return found


def test_no_doc_or_example_passes_an_fstring_to_shell() -> None:
    bad = []
    for name, text in _sources():
        for block in BLOCK.findall(text):
            bad += [f"{name}: {block.splitlines()[n - 1].strip()}" for n in offending_calls(block)]
    assert not bad, "build commands as argv lists or quoted templates:\n" + "\n".join(bad)


def test_the_pages_show_the_safe_forms() -> None:
    readme = (ROOT / "README.md").read_text()
    assert 'shell(["deployctl", "install", "web", params.version])' in readme
    resources = (ROOT / "docs" / "resources.md").read_text()
    for form in ('shell(["deployctl", "install", svc, version])', "shell.unsafe(", "http.url("):
        assert form in resources


@pytest.mark.parametrize(
    "source",
    [
        'shell(f"deployctl install {v}")',
        'shell("deployctl install {}".format(v))',
        'shell("deployctl install " + v)',
        'shell("deployctl install %s" % v)',
        'shell.unsafe(f"rm {path}")',
        'ssh(host, f"deployctl install {v}")',
        'x = shell(\n    f"deployctl {v}"\n)',
    ],
)
def test_the_check_catches_each_spelling(source: str) -> None:
    assert offending_calls(source)


@pytest.mark.parametrize(
    "source",
    [
        'shell(["deployctl", "install", f"web-{color}", v])',
        'shell("deployctl install {v}", v=v)',
        'shell("ls -l | wc -l")',
        'shell(f"ls")',
        'ssh(host, ["deployctl", "install", v])',
        'log.info(f"shell {v}")',
    ],
)
def test_the_check_passes_the_safe_forms(source: str) -> None:
    assert offending_calls(source) == []
