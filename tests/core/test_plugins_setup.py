"""What building a plugin manager costs once per process, not once per Runner: the entry points
(scanned and loaded once, rescanned when sys.path changes), the hook implementations of module
plugins (read quickly, with pluggy's own answer), the resource factories (asked once per set of
registered plugins)."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import types
from typing import Any

import pluggy
import pytest

from runbook import hookimpl, hookspecs
from runbook import plugins as plugins_mod
from runbook.errors import PluginError
from runbook.plugins import Plugins
from runbook.resources import shell_resource

# -- hook implementations of a module plugin ------------------------------------------------------


class _Holder:
    @hookimpl
    def runbook_routers(self) -> list[Any]:
        return []


def _module_plugin() -> types.ModuleType:
    mod = types.ModuleType("fake_plugin")

    @hookimpl
    def runbook_resources() -> dict[str, Any]:
        return {"vault": lambda: "v"}

    @hookimpl(specname="runbook_strategies")
    def my_strategies() -> list[Any]:
        return []

    def runbook_notifiers() -> list[Any]:  # not marked: pluggy does not register it
        return []

    @hookimpl
    def runbook_executors() -> list[Any]:
        return []

    mod.runbook_resources = runbook_resources  # type: ignore[attr-defined]
    mod.my_strategies = my_strategies  # type: ignore[attr-defined]
    mod.runbook_notifiers = runbook_notifiers  # type: ignore[attr-defined]
    mod.runbook_executors = staticmethod(runbook_executors)  # type: ignore[attr-defined]
    mod.runbook_routers = _Holder().runbook_routers  # type: ignore[attr-defined]
    mod.SomeClass = _Holder  # type: ignore[attr-defined]
    mod.CONSTANT = 3  # type: ignore[attr-defined]
    mod.submodule = os  # type: ignore[attr-defined]
    return mod


def _impls(pm: pluggy.PluginManager) -> dict[str, list[Any]]:
    out = {}
    for name, caller in vars(pm.hook).items():
        if isinstance(caller, pluggy.HookCaller):
            found = [impl.function for impl in caller.get_hookimpls()]
            if found:
                out[name] = found
    return out


def test_a_module_plugin_registers_the_hooks_pluggy_itself_finds():
    plugin = _module_plugin()
    ours = plugins_mod._Manager(hookspecs.PROJECT)
    theirs = pluggy.PluginManager(hookspecs.PROJECT)
    for pm in (ours, theirs):
        pm.add_hookspecs(hookspecs)
        pm.register(plugin, name="fake")
    assert _impls(ours) == _impls(theirs)
    assert set(_impls(ours)) == {
        "runbook_resources",
        "runbook_strategies",
        "runbook_executors",
        "runbook_routers",
    }


def test_a_module_plugin_with_no_marked_function_registers_nothing():
    mod = types.ModuleType("unmarked")
    mod.runbook_resources = lambda: {}  # type: ignore[attr-defined]
    pm = plugins_mod._Manager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(mod, name="unmarked")
    assert _impls(pm) == {}


# -- entry points, scanned once -----------------------------------------------------------------


class _Dist:
    name = "runbook-fake"
    version = "1.0"


class _EntryPoint:
    def __init__(self, name: str, plugin: Any = None, error: Exception | None = None) -> None:
        self.name, self.dist, self._plugin, self._error = name, _Dist(), plugin, error
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        if self._error is not None:
            raise self._error
        return self._plugin


class _Vault:
    @hookimpl
    def runbook_resources(self) -> dict[str, Any]:
        return {"vault": lambda: "secret"}


@pytest.fixture
def fake_entry_points(monkeypatch, tmp_path):
    """``entrypoints.entry_points`` answering with a list the test controls, counting scans; a
    folder on sys.path the test can "install into" (change the modification time of)."""
    found: list[_EntryPoint] = []
    scans: list[str] = []

    def entry_points(*, group: str) -> list[_EntryPoint]:
        scans.append(group)
        return list(found)

    monkeypatch.setattr(plugins_mod.entrypoints, "entry_points", entry_points)
    monkeypatch.setattr(plugins_mod, "_ENTRY_POINTS", {})
    monkeypatch.setattr(plugins_mod, "_SHARED", {})
    monkeypatch.setattr(plugins_mod.sys, "path", [*plugins_mod.sys.path, str(tmp_path)])
    return found, scans, tmp_path


def test_entry_points_are_scanned_and_loaded_once_per_process(fake_entry_points):
    found, scans, _ = fake_entry_points
    ep = _EntryPoint("vault", _Vault())
    found.append(ep)
    first, second = Plugins(), Plugins()
    assert scans == ["runbook"] and ep.loads == 1
    for plugins in (first, second):
        assert "vault" in plugins.resources()
        assert ("vault", "entry point runbook-fake 1.0") in {
            (i.name, i.source) for i in plugins.describe()
        }


def test_a_plugin_installed_while_the_process_runs_is_found(fake_entry_points):
    found, scans, folder = fake_entry_points
    assert "vault" not in Plugins().resources()
    found.append(_EntryPoint("vault", _Vault()))
    stat = os.stat(folder)
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # pip wrote here
    assert "vault" in Plugins().resources()
    assert scans == ["runbook", "runbook"]


def test_a_plugin_that_fails_to_load_fails_every_time_and_is_not_cached(fake_entry_points):
    found, scans, _ = fake_entry_points
    broken = _EntryPoint("broken", error=ImportError("no module named vaultlib"))
    found.append(broken)
    for _ in range(2):
        with pytest.raises(PluginError, match=r"'broken' from runbook-fake 1\.0 failed to load"):
            Plugins()
    assert broken.loads == 2 and len(scans) == 2


def test_without_entry_points_nothing_is_scanned(fake_entry_points):
    found, scans, _ = fake_entry_points
    found.append(_EntryPoint("vault", _Vault()))
    assert "vault" not in Plugins(entry_points=False).resources()
    assert scans == []


# -- resources, asked once per set of plugins ----------------------------------------------------


def test_resources_are_asked_once_and_again_after_a_plugin_is_added():
    calls = []

    class Counting:
        @hookimpl
        def runbook_resources(self) -> dict[str, Any]:
            calls.append(1)
            return {"vault": lambda: "v"}

    plugins = Plugins([Counting()], entry_points=False)
    assert plugins.resources()["shell"] is shell_resource
    plugins.resources()["vault"] = None  # a caller's copy: the cache is not touched
    assert plugins.resources()["vault"] is not None
    assert len(calls) == 1
    plugins.add(_Vault())
    assert plugins.resources()["vault"]() == "secret"  # the later plugin wins, as before
    assert len(calls) == 2


def test_resources_forget_a_removed_plugin():
    vault = _Vault()
    plugins = Plugins([vault], entry_points=False)
    assert "vault" in plugins.resources()
    plugins.remove(vault)
    assert "vault" not in plugins.resources()


# -- one plugin manager for every Runner without plugins of its own -------------------------------


def test_runners_without_plugins_share_one_manager_and_its_providers():
    from runbook import Runner

    first, second = Runner(entry_points=False), Runner(entry_points=False)
    assert first.plugins is second.plugins and first.plugins.shared
    assert first.store is not second.store  # providers are still opened per Runner
    assert Runner(plugins=[_Vault()], entry_points=False).plugins is not first.plugins
    assert Runner(entry_points=True).plugins is not first.plugins  # per entry_points flag


def test_the_shared_manager_cannot_be_added_to_and_unshared_copies_it():
    shared = plugins_mod.shared(entry_points=False)
    with pytest.raises(PluginError, match="read-only"):
        shared.add(_Vault())
    with pytest.raises(PluginError, match="read-only"):
        shared.remove(shared.pm.get_plugin("runbook.resources"))
    own = shared.unshared()
    assert own is not shared and not own.shared
    assert {i.name for i in own.describe()} == {i.name for i in shared.describe()}
    own.add(_Vault())
    assert "vault" in own.resources() and "vault" not in shared.resources()
    assert own.unshared() is own


def test_a_runbookconf_with_hooks_gives_that_runner_its_own_manager(write_runbook, tmp_path):
    from runbook import Runner, load

    (tmp_path / "runbookconf.py").write_text(
        "from runbook import hookimpl\n"
        "SEEN = []\n"
        "@hookimpl\n"
        "def runbook_step_finished(step, result):\n"
        "    SEEN.append(step)\n"
    )
    rb = load(write_runbook("from runbook import step\n\n@step\ndef a():\n    pass\n"))
    runner, other = Runner(entry_points=False), Runner(entry_points=False)
    shared = runner.plugins
    runner.run(rb)
    runner.run(rb)
    assert runner.plugins is not shared and shared is other.plugins
    assert not shared.has(rb.conftests[0])  # the other runners never call its hooks
    assert rb.conftests[0].SEEN == ["a", "a"]


def test_the_shared_manager_is_rebuilt_when_hook_tracing_is_switched_on(monkeypatch):
    monkeypatch.setattr(plugins_mod, "_SHARED", {})
    before = plugins_mod.shared(entry_points=False)
    assert plugins_mod.shared(entry_points=False) is before
    monkeypatch.setenv("RUNBOOK_TRACE_HOOKS", "1")
    assert plugins_mod.shared(entry_points=False) is not before


def test_the_shared_manager_is_rebuilt_when_a_plugin_is_installed(fake_entry_points):
    found, _, folder = fake_entry_points
    before = plugins_mod.shared()
    assert "vault" not in before.resources()
    found.append(_EntryPoint("vault", _Vault()))
    stat = os.stat(folder)
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert "vault" in plugins_mod.shared().resources()


def test_has_knows_objects_modules_and_names():
    vault = _Vault()
    plugins = Plugins([vault], entry_points=False)
    assert plugins.has(vault) and not plugins.has(_Vault())
    assert plugins.has("runbook.resources")
    assert plugins.has(importlib.import_module("runbook.resources"))
    assert not plugins.has("no.such.plugin")


# -- collection and configuration import only the built-ins they ask ------------------------------


@pytest.mark.parametrize(
    "name", [n for n in plugins_mod.DEFAULT_PLUGINS if n not in plugins_mod.SETUP_PLUGINS]
)
def test_no_other_builtin_answers_what_collection_and_configuration_ask(name):
    plugins = Plugins(entry_points=False, defaults=(name,))
    for hook in plugins_mod.SETUP_HOOKS:
        assert not plugins.has_impls(hook), f"{name} implements {hook}: add it to SETUP_PLUGINS"


def test_setup_plugins_answer_the_builtin_resources():
    every = Plugins(entry_points=False).resources()
    setup = Plugins(entry_points=False, defaults=plugins_mod.SETUP_PLUGINS).resources()
    assert setup == every


def test_load_imports_no_store_audit_lock_or_executor(tmp_path):
    """Collecting a runbook (``runbook plan``, ``list``, editors) stays cheap: it opens nothing,
    and does not import asyncio (~15 ms of a fresh process's first ``load()``; only a run needs it).

    Checked in a fresh interpreter that is not measured by coverage, whatever runs this suite:
    ``coverage run`` (its ``patch = ["subprocess"]``) starts coverage in every child through a
    ``.pth`` file when ``COVERAGE_PROCESS_*`` is set, and coverage itself imports ``sqlite3``.
    """
    import os
    import subprocess
    import sys

    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "rb.py"
    path.write_text("from runbook import step\n\n@step\ndef a(shell):\n    return 1\n")
    code = (
        "import sys\n"
        "from runbook import load\n"
        f"assert list(load({str(path)!r}).steps) == ['a']\n"
        "heavy = ('sqlite3', 'runbook.store', 'runbook.audit.sinks', 'runbook.locks',"
        " 'runbook.executors', 'runbook.engine', 'httpx', 'asyncio')\n"
        "print(sorted(m for m in sys.modules if m in heavy"
        " or m.startswith(tuple(h + '.' for h in heavy))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"


# What collection leaves unimported while every name resolves without the plugins: the plugin
# manager, the entry-point scan (runbook.entrypoints), the built-in and the installed plugins; and
# while the runbook has no inventory, the inventory parsers.
LAZY_FOR_LOAD = (
    "runbook.plugins",
    "runbook.resources",
    "runbook.entrypoints",
    "importlib.metadata",
    "runbook.inventory",
    *sorted(
        {ep.value.partition(":")[0] for ep in importlib.metadata.entry_points(group="runbook")}
    ),
)


def _imported_by_load(tmp_path, source: str, *, conf: str | None = None) -> list[str]:
    """Which of ``LAZY_FOR_LOAD`` a fresh interpreter (not measured by coverage, see above) has
    imported after loading ``source``; what it collected is checked against a load here."""
    import json
    import subprocess
    import sys

    (tmp_path / "pyproject.toml").touch()
    if conf is not None:
        (tmp_path / "runbookconf.py").write_text(conf)
    path = tmp_path / "rb.py"
    path.write_text(source)
    code = (
        "import json, sys\n"
        "from runbook import load\n"
        f"rb = load({str(path)!r})\n"
        "args = {n: [(a.name, a.source) for a in s.args] for n, s in rb.steps.items()}\n"
        f"mods = sorted(m for m in sys.modules if m.partition('.')[0] in {LAZY_FOR_LOAD!r}\n"
        f"              or m in {LAZY_FOR_LOAD!r})\n"
        "print(json.dumps([args, mods]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    args, imported = json.loads(out.stdout.splitlines()[-1])
    from runbook import load

    here = load(path)
    assert args == {n: [[a.name, a.source] for a in s.args] for n, s in here.steps.items()}
    return imported


def test_load_imports_no_plugin_when_every_name_is_a_step_builtin_or_local_resource(tmp_path):
    source = (
        "from runbook import step\n\n"
        "@step\ndef a(shell, log, ctx):\n    return 1\n\n"
        "@step\ndef b(a, http, greeting):\n    return a\n"
    )
    conf = "from runbook import resource\n@resource\ndef greeting():\n    return 'hi'\n"
    assert _imported_by_load(tmp_path, source, conf=conf) == []


def test_load_imports_the_plugins_for_a_name_only_they_may_resolve(tmp_path):
    """A parameter that is no step, built-in or runbookconf resource may be a plugin's resource,
    even with a default (a plugin's resource beats the default): the plugins are discovered."""
    source = "from runbook import step\n\n@step\ndef a(vault=None):\n    return 1\n"
    imported = _imported_by_load(tmp_path, source)
    assert {"runbook.plugins", "runbook.resources", "runbook.entrypoints"} <= set(imported)


def test_load_imports_the_inventory_for_a_runbook_that_has_one(tmp_path):
    (tmp_path / "hosts.ini").write_text("[web]\nweb-1\nweb-2\n")
    source = 'from runbook import step\n\ninventory = "hosts.ini"\n\n@step\ndef a():\n    pass\n'
    assert _imported_by_load(tmp_path, source) == ["runbook.inventory"]


def test_import_runbook_imports_no_plugin_machinery_until_hookimpl_is_asked():
    """A runbook's ``from runbook import step`` does not bring pluggy and every hook spec;
    ``from runbook import hookimpl`` (a plugin, a runbookconf.py) does."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "import runbook\n"
        "lazy = ('pluggy', 'runbook.hookspecs', 'runbook.collect', 'runbook.plugins')\n"
        "before = sorted(m for m in sys.modules if m in lazy)\n"
        "from runbook import hookimpl\n"
        "from runbook.hookspecs import hookimpl as real\n"
        "print(json.dumps([before, hookimpl is real, 'pluggy' in sys.modules]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout.splitlines()[-1]) == [[], True, True]


def test_a_plugins_resource_resolves_when_load_asks_for_it(fake_entry_points, write_runbook):
    from runbook import load

    found, scans, _ = fake_entry_points
    found.append(_EntryPoint("vault", _Vault()))
    steps_only = load(write_runbook("from runbook import step\n@step\ndef a():\n    return 1\n"))
    assert scans == []  # nothing asked the plugins
    source = "from runbook import step\n@step\ndef a(vault, other=2):\n    return 1\n"
    rb = load(write_runbook(source, name="rb2"))
    assert [(a.name, a.source) for a in rb.steps["a"].args] == [
        ("vault", "name"),
        ("other", "default"),
    ]
    assert scans == ["runbook"] and "vault" in rb.names
    assert "vault" in steps_only.names and scans == ["runbook"]  # the manager is shared


def test_a_name_nothing_resolves_is_suggested_from_the_plugins_names(
    fake_entry_points, write_runbook
):
    from runbook import DefinitionError, load

    found, _, _ = fake_entry_points
    found.append(_EntryPoint("vault", _Vault()))
    source = "from runbook import step\n@step\ndef a(vualt):\n    return 1\n"
    with pytest.raises(DefinitionError, match="did you mean 'vault'"):
        load(write_runbook(source))


def test_a_broken_plugin_fails_the_load_that_needs_the_plugins(fake_entry_points, write_runbook):
    """... and not one that does not ask them (the run, which builds the plugin manager, does)."""
    from runbook import load

    found, _, _ = fake_entry_points
    found.append(_EntryPoint("broken", error=ImportError("no module named vaultlib")))
    rb = load(write_runbook("from runbook import step\n@step\ndef a(shell):\n    pass\n"))
    assert list(rb.steps) == ["a"]
    source = "from runbook import step\n@step\ndef a(vault):\n    return 1\n"
    with pytest.raises(PluginError, match=r"'broken' from runbook-fake 1\.0 failed to load"):
        load(write_runbook(source, name="rb2"))


def test_a_runbookconf_with_resources_only_keeps_the_shared_manager(write_runbook, tmp_path):
    from runbook import Runner, load

    (tmp_path / "runbookconf.py").write_text(
        "from runbook import resource\n@resource\ndef greeting():\n    return 'hi'\n"
    )
    source = "from runbook import step\n\n@step\ndef a(greeting):\n    return greeting\n"
    rb = load(write_runbook(source))
    runner = Runner(entry_points=False)
    shared = runner.plugins
    result = runner.run(rb)
    assert result.status == "succeeded" and result.steps["a"].output == "hi"
    assert runner.plugins is shared
