"""runbook.entrypoints: the same entry points as importlib.metadata, without importing it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from runbook import entrypoints
from runbook.errors import PluginError


def _stdlib(group: str) -> list[tuple[str, str, str]]:
    return [(ep.name, ep.value, ep.group) for ep in importlib.metadata.entry_points(group=group)]


def _ours(group: str) -> list[tuple[str, str, str]]:
    return [(ep.name, ep.value, ep.group) for ep in entrypoints.entry_points(group=group)]


def _dist(folder: Path, dirname: str, entry_points: str | None, version: str = "1.0") -> Path:
    info = folder / dirname
    info.mkdir(parents=True)
    name = dirname.rpartition(".")[0].partition("-")[0]
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if entry_points is not None:
        (info / "entry_points.txt").write_text(entry_points)
    return info


@pytest.mark.parametrize("group", ["runbook", "console_scripts", "pytest11", "no-such-group"])
def test_this_environment_gives_what_importlib_metadata_gives(group: str) -> None:
    assert _ours(group) == _stdlib(group)


def test_the_first_distribution_of_a_name_hides_later_ones_in_the_same_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folders in sys.path order, each folder's metadata in the order it lists them, one
    distribution per normalized name (``Pkg.A`` is ``pkg_a``): importlib.metadata's answer."""
    first, second = tmp_path / "first", tmp_path / "second"
    _dist(
        first,
        "pkg_a-1.0.dist-info",
        "# a comment\nbefore = any:section\n\n[runbook]\nalpha = mod_a:plugin\n"
        "  beta=mod_a.sub:obj.attr [extra]  \n[console_scripts]\nnot-ours = x:y\n",
    )
    _dist(first, "Other_B-2.0.egg-info", "[runbook]\ngamma = mod_b\n")
    _dist(first, "no_eps-1.0.dist-info", None)
    (first / "Legacy-1.0.egg-info").write_text("Metadata-Version: 1.0\nName: Legacy\n")  # a file
    _dist(second, "Pkg.A-0.9.dist-info", "[runbook]\nhidden = old:plugin\n")
    _dist(second, "pkg_c-3.0.dist-info", "[runbook]\ndelta = mod_c:plugin\n")
    monkeypatch.setattr(sys, "path", [str(first), str(second), str(tmp_path / "missing")])
    expected = _stdlib("runbook")
    assert _ours("runbook") == expected
    assert sorted(expected[:3]) == [
        ("alpha", "mod_a:plugin", "runbook"),
        ("beta", "mod_a.sub:obj.attr [extra]", "runbook"),
        ("gamma", "mod_b", "runbook"),
    ]
    assert expected[3:] == [("delta", "mod_c:plugin", "runbook")]
    (alpha,) = [ep for ep in entrypoints.entry_points(group="runbook") if ep.name == "alpha"]
    assert (alpha.dist.name, alpha.dist.version) == ("pkg_a", "1.0")


def test_a_zip_on_the_path_is_read_by_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped-1.0.dist-info/METADATA", "Name: zipped\nVersion: 1.0\n")
        zf.writestr("zipped-1.0.dist-info/entry_points.txt", "[runbook]\nz = zmod:plugin\n")
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert entrypoints._folders() is None
    assert _ours("runbook") == [("z", "zmod:plugin", "runbook")] == _stdlib("runbook")
    (ep,) = entrypoints.entry_points(group="runbook")
    assert ep.dist.version == "1.0"


def test_a_finder_that_finds_distributions_is_asked_through_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = _dist(tmp_path / "elsewhere", "found-1.0.dist-info", "[runbook]\nf = fmod:plugin\n")

    class Finder:
        @staticmethod
        def find_spec(*args: Any) -> None:
            return None

        @staticmethod
        def find_distributions(context: Any = None) -> list[Any]:
            return [importlib.metadata.PathDistribution(info)]

    monkeypatch.setattr(sys, "path", [])
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert _ours("runbook") == [("f", "fmod:plugin", "runbook")] == _stdlib("runbook")


def test_load_imports_the_object_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ep_mod.py").write_text("class Obj:\n    attr = 'here'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    make = entrypoints.EntryPoint
    assert make("a", "ep_mod:Obj.attr", "runbook", None).load() == "here"
    assert make("b", "ep_mod : Obj [extra]", "runbook", None).load().attr == "here"
    assert make("c", "ep_mod", "runbook", None).load().__name__ == "ep_mod"
    with pytest.raises(ValueError, match="malformed value"):
        make("d", "ep_mod::Obj", "runbook", None).load()
    with pytest.raises(AttributeError):
        make("e", "ep_mod:Missing", "runbook", None).load()


def test_a_broken_line_of_the_group_is_refused_and_one_of_another_group_is_skipped() -> None:
    assert (
        entrypoints.parse("[other]\nno equals sign\n[runbook]\nok = m\n", "runbook")[0].name == "ok"
    )
    with pytest.raises(ValueError, match=r"\[runbook\] has a line that is not `name = value`"):
        entrypoints.parse("[runbook]\nno equals sign\n", "runbook", "/x/p-1.dist-info")


def test_a_plugin_list_that_cannot_be_read_is_one_plugin_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook import plugins

    _dist(tmp_path, "broken-1.0.dist-info", "[runbook]\nthis is not an entry point\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    monkeypatch.setattr(plugins, "_ENTRY_POINTS", {})
    monkeypatch.setattr(plugins, "_SHARED", {})
    with pytest.raises(PluginError, match=r"the installed plugins cannot be listed: .*broken-1\.0"):
        plugins.Plugins()


def test_the_cli_starts_without_importing_importlib_metadata() -> None:
    """What the module is for: ~20 ms of every command (``bench/startup.py``)."""
    code = "import sys, runbook.cli; print('importlib.metadata' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "False"
