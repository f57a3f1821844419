"""Packaging facts a reviewer checks first, read from the source tree (no build needed).

The built artefacts (what a wheel really contains, that it installs and works outside the
checkout) are checked by ``./dev wheels``, which CI runs.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.parent for p in (REPO / "plugins").glob("*/pyproject.toml"))


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text())


def _package(folder: Path) -> str:
    return _project(folder)["tool"]["setuptools"]["dynamic"]["version"]["attr"].split(".")[0]


def _version(folder: Path) -> Version:
    init = folder / _package(folder) / "__init__.py"
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            assert isinstance(node.value, ast.Constant)
            return Version(str(node.value.value))
    raise AssertionError(f"{init} has no __version__")


def _core() -> Version:
    return _version(REPO)


def test_there_are_first_party_plugins_to_check():
    assert len(PLUGINS) >= 4


@pytest.mark.parametrize("folder", [REPO, *PLUGINS], ids=lambda p: p.name)
def test_one_version_source_per_package_and_all_released_together(folder: Path):
    project = _project(folder)["project"]
    assert "version" not in project, "the version is read from __version__, not written twice"
    assert project["dynamic"] == ["version"]
    assert _version(folder) == _core()


@pytest.mark.parametrize("folder", PLUGINS, ids=lambda p: p.name)
def test_plugins_pin_a_compatible_range_of_runbook(folder: Path):
    reqs = [Requirement(r) for r in _project(folder)["project"]["dependencies"]]
    (core,) = [r for r in reqs if r.name == "runbook"]
    current = _core()
    assert current in core.specifier, f"{folder.name} does not admit runbook {current}"
    next_minor = Version(f"{current.major}.{current.minor + 1}.0")
    assert next_minor not in core.specifier, f"{folder.name} admits an untested runbook"


@pytest.mark.parametrize("folder", [REPO, *PLUGINS], ids=lambda p: p.name)
def test_license_typed_marker_and_classifiers(folder: Path):
    project = _project(folder)["project"]
    assert project["license"] == "MIT"  # SPDX expression, not the deprecated table
    assert (folder / "LICENSE").read_text().startswith("MIT License")
    assert (folder / _package(folder) / "py.typed").exists()
    assert "Typing :: Typed" in project["classifiers"]


@pytest.mark.parametrize("folder", [REPO, *PLUGINS], ids=lambda p: p.name)
def test_only_the_package_itself_is_shipped(folder: Path):
    """``include = ["runbook*"]`` also matched the example ``runbooks/`` folder."""
    include = _project(folder)["tool"]["setuptools"]["packages"]["find"]["include"]
    package = _package(folder)
    assert include == [package, f"{package}.*"]


@pytest.mark.parametrize("folder", [REPO, *PLUGINS], ids=lambda p: p.name)
def test_sdist_manifest_carries_the_tests(folder: Path):
    manifest = (folder / "MANIFEST.in").read_text()
    assert re.search(r"^graft tests$", manifest, re.M)


def test_the_testing_extra_brings_the_pytest_plugins_dependencies():
    extras = _project(REPO)["project"]["optional-dependencies"]
    assert any(Requirement(r).name == "freezegun" for r in extras["testing"])


@pytest.mark.parametrize("folder", PLUGINS, ids=lambda p: p.name)
def test_every_plugin_is_type_checked(folder: Path):
    """./dev test runs pyright and mypy. mypy's files are listed one by one (a glob also matches
    the egg-info folders), so a new plugin must be added there; pyright must not exclude it."""
    tool = _project(REPO)["tool"]
    assert f"plugins/{folder.name}/{_package(folder)}" in tool["mypy"]["files"]
    assert not any(folder.name in pattern for pattern in tool["pyright"]["exclude"])
