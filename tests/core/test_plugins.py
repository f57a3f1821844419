"""Plugins: built-ins register like outside plugins; providers by URL scheme validated in one place;
lifecycle hooks called in order with the documented arguments, and never able to break a run."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from runbook import Runner, hookimpl, load
from runbook.errors import PluginError
from runbook.hookspecs import Provider, StrategySpec
from runbook.plugins import DEFAULT_PLUGINS, Plugins
from runbook.store.memory import MemoryStore


def test_builtins_are_registered_as_internal_plugins():
    infos = {i.name: i for i in Plugins(entry_points=False).describe()}
    assert set(DEFAULT_PLUGINS) <= set(infos)
    assert all(infos[name].source == "builtin" for name in DEFAULT_PLUGINS)
    assert "runbook_run_stores" in infos["runbook.store.memory"].hooks
    assert "runbook_resources" in infos["runbook.resources"].hooks


def test_builtin_schemes_are_served():
    plugins = Plugins(entry_points=False)
    assert {"memory", "sqlite"} <= set(plugins.providers("store"))
    assert {"memory", "jsonl"} <= set(plugins.providers("audit"))
    assert {"memory", "file"} <= set(plugins.providers("lock"))
    assert "console" in plugins.providers("notifier")


class RecordingStore(MemoryStore):
    opened: list[tuple[str, dict[str, Any]]] = []


class VaultPlugin:
    """An outside plugin: a resource and a run store for the ``vault://`` scheme."""

    @hookimpl
    def runbook_resources(self):
        return {"greeter": lambda env: f"hello from {env}"}

    @hookimpl
    def runbook_run_stores(self):
        def open_store(url, **options):
            RecordingStore.opened.append((url, options))
            return RecordingStore(url)

        return [Provider("vault", open_store, "a store in a vault")]


def test_external_plugin_adds_a_resource_and_a_store_scheme(write_runbook):
    path = write_runbook("""
        from runbook import step

        @step
        def hello(greeter):
            return greeter
    """)
    runner = Runner(plugins=[VaultPlugin()], store="vault://prod", entry_points=False, actor="t")
    result = runner.run(path)
    assert result.status == "succeeded" and result.steps["hello"].output == "hello from dev"
    assert RecordingStore.opened[-1] == ("vault://prod", {})
    assert runner.store.get_run(result.run_id).status == "succeeded"
    with pytest.raises(Exception, match="'greeter' is not a step, resource or built-in"):
        load(path, plugins=Plugins(entry_points=False))


def test_a_runner_resource_beats_a_plugin_resource(write_runbook):
    path = write_runbook("""
        from runbook import step

        @step
        def hello(greeter):
            return greeter
    """)
    runner = Runner(plugins=[VaultPlugin()], resources={"greeter": "fake"}, entry_points=False)
    assert runner.run(path).steps["hello"].output == "fake"


class VaultOne:
    @hookimpl
    def runbook_run_stores(self):
        return [Provider("vault", lambda url, **_: MemoryStore(url))]


class VaultTwo(VaultOne):
    pass


def test_two_plugins_claiming_one_scheme_is_an_error_naming_both():
    plugins = Plugins([VaultOne(), VaultTwo()], entry_points=False)
    with pytest.raises(PluginError) as info:
        plugins.open("store", "vault://x")
    message = str(info.value)
    assert "vault:// for store is claimed by both" in message
    assert "VaultOne" in message and "VaultTwo" in message


def test_unknown_scheme_lists_the_known_ones():
    plugins = Plugins(entry_points=False)
    with pytest.raises(PluginError) as info:
        plugins.open("store", "nosuch://x")
    assert "no store plugin for nosuch://" in str(info.value)
    assert "known: memory://, sqlite://" in str(info.value)
    with pytest.raises(PluginError, match=r"pip install runbook-redis"):
        plugins.open("lock", "redis://localhost")
    with pytest.raises(PluginError, match="is not a URL"):
        plugins.open("store", "just-a-path")


def test_a_provider_hook_must_return_provider_records():
    class Sloppy:
        @hookimpl
        def runbook_routers(self):
            return [("mine", object)]

    with pytest.raises(PluginError, match=r"expected runbook\.hookspecs\.Provider"):
        Plugins([Sloppy()], entry_points=False).providers("router")


def test_invalid_plugins_are_refused_clearly():
    class Typo:
        @hookimpl
        def runbook_step_started(self, run, stepname):  # not an argument of the spec
            pass

    with pytest.raises(PluginError, match="is invalid"):
        Plugins([Typo()], entry_points=False)
    with pytest.raises(PluginError, match="cannot import plugin module 'no_such_plugin_mod'"):
        Plugins(["no_such_plugin_mod"], entry_points=False)


def test_plugin_strategies_are_listed():
    class Strategies:
        @hookimpl
        def runbook_strategies(self):
            return [StrategySpec("dark_launch", lambda name: None, "flags first")]

    strategies = Plugins([Strategies()], entry_points=False).strategies()
    assert strategies["dark_launch"].description == "flags first"
    assert {"blue_green", "canary", "rolling"} <= set(strategies)


# -- lifecycle hooks --------------------------------------------------------------------------


class Recorder:
    """Implements every lifecycle hook, each with the subset of arguments it needs."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def runbook_run_started(self, run):
        self.calls.append(("run_started", run.run_id, run.env, run.params))

    @hookimpl
    def runbook_step_started(self, step, attempt):
        self.calls.append(("step_started", step, attempt))

    @hookimpl
    def runbook_step_finished(self, run, step, result):
        self.calls.append(("step_finished", step, result.status))

    @hookimpl
    def runbook_rollback_finished(self, step, result):
        self.calls.append(("rollback_finished", step, result.status))

    @hookimpl
    def runbook_run_finished(self, run, result):
        self.calls.append(("run_finished", run.run_id, result.status))

    @hookimpl
    def runbook_event(self, event):
        self.calls.append(("event", event.kind, event.step, event.seq))

    @hookimpl
    def runbook_progress(self, step, message, fraction):
        self.calls.append(("progress", step, message, fraction))


HOOKED = """
    from runbook import param, rollback, step
    token = param("token", secret=True, default="tok-secret-1234")
    TRIES = []

    @step(reversible=True)
    def stage(ctx):
        ctx.progress("copying", 0.5)
        return "staged"

    @rollback(stage)
    def unstage():
        pass

    @step(retries=1, backoff=0)
    def switch(stage):
        TRIES.append(1)
        raise RuntimeError("switch failed")
"""


def test_lifecycle_hooks_called_in_order_with_the_right_arguments(write_runbook):
    recorder = Recorder()
    rb = load(write_runbook(HOOKED))
    runner = Runner(
        plugins=[recorder],
        entry_points=False,
        seed=0,
        actor="t",
        store=f"memory://core-{uuid.uuid4().hex}",
    )
    result = runner.run(rb)
    assert result.status == "rolled_back"
    lifecycle = [c for c in recorder.calls if c[0] != "event"]
    assert lifecycle == [
        ("run_started", result.run_id, "dev", {"token": "***"}),
        ("step_started", "stage", 1),
        ("progress", "stage", "copying", 0.5),
        ("step_finished", "stage", "succeeded"),
        ("step_started", "switch", 1),
        ("step_started", "switch", 2),
        ("step_finished", "switch", "failed"),
        ("rollback_finished", "stage", "rolled_back"),
        ("run_finished", result.run_id, "rolled_back"),
    ]
    events = [c for c in recorder.calls if c[0] == "event"]
    assert [(kind, step) for _, kind, step, _ in events] == [(e.kind, e.step) for e in result.audit]
    assert all(seq is not None for *_, seq in events), "hooks see events as the sink stored them"


def test_a_raising_hook_does_not_break_the_run(write_runbook, caplog):
    class Broken:
        @hookimpl
        def runbook_step_finished(self, step):
            raise RuntimeError("plugin bug")

        @hookimpl
        def runbook_event(self, event):
            raise RuntimeError("plugin bug in event")

    path = write_runbook("""
        from runbook import step

        @step
        def a():
            return 1

        @step
        def b(a):
            return a + 1
    """)
    with caplog.at_level(logging.ERROR, logger="runbook"):
        result = Runner(plugins=[Broken()], entry_points=False).run(path)
    assert result.status == "succeeded" and result.steps["b"].output == 2
    assert "hook runbook_step_finished failed" in caplog.text


def test_runbookconf_can_implement_hooks(write_runbook, tmp_path):
    (tmp_path / "runbookconf.py").write_text(
        "from runbook import hookimpl\n"
        "SEEN = []\n"
        "@hookimpl\n"
        "def runbook_step_finished(step, result):\n"
        "    SEEN.append((step, result.status))\n"
    )
    rb = load(
        write_runbook("""
        from runbook import step

        @step
        def a():
            pass
    """)
    )
    Runner(entry_points=False).run(rb)
    assert rb.conftests[0].SEEN == [("a", "succeeded")]


def test_trace_hooks_env_prints_hook_calls_with_arguments_and_results(monkeypatch, capsys):
    monkeypatch.setenv("RUNBOOK_TRACE_HOOKS", "1")

    class Shouter:
        @hookimpl
        def runbook_cli_commands(self, group):
            return None

    plugins = Plugins([Shouter()], entry_points=False)
    plugins.resources()
    plugins.hook.runbook_cli_commands(group="the-group")
    err = capsys.readouterr().err
    assert "runbook_resources [hook]" in err
    assert "[runbook hook]       group: the-group" in err  # the arguments
    assert "finish runbook_resources --> [{'shell'" in err  # and the results
    assert all(line.startswith("[runbook hook]") for line in err.splitlines())


def test_misspelled_hookimpl_is_refused_naming_plugin_and_hook():
    class Typo:
        @hookimpl
        def runbook_resorces(self):
            return {}

    with pytest.raises(PluginError) as info:
        Plugins([Typo()], entry_points=False)
    message = str(info.value)
    assert "runbook_resorces" in message
    assert "did you mean runbook_resources?" in message
    assert "Typo" in message


def test_a_refused_plugin_leaves_the_manager_usable():
    class Typo:
        @hookimpl
        def runbook_strategy(self):
            return []

    plugins = Plugins(entry_points=False)
    with pytest.raises(PluginError):
        plugins.add(Typo())
    assert "runbook_strategy" not in {i.name for i in plugins.describe()}
    assert "shell" in plugins.resources()  # check_pending no longer trips on the removed one


def test_optionalhook_may_name_a_hook_runbook_does_not_define():
    class Future:
        @hookimpl(optionalhook=True)
        def runbook_not_yet_a_hook(self):
            return None

    Plugins([Future()], entry_points=False)  # no error


def test_specname_hookimpl_registers_providers_through_pluggy():
    from runbook.hookspecs import Provider

    opened = []

    class Renamed:
        @hookimpl(specname="runbook_notifiers")
        def my_notifiers(self):
            return [Provider("pager", lambda url, **kw: opened.append(url) or "pager")]

    plugins = Plugins([Renamed()], entry_points=False)
    assert "pager" in plugins.providers("notifier")
    assert plugins.open("notifier", "pager://on-call") == "pager"
    assert opened == ["pager://on-call"]


PLUGIN_WITH_CONFIG = """
from runbook import hookimpl

SEEN = []


@hookimpl
def runbook_config_keys():
    return ["canaryctl"]


@hookimpl
def runbook_configure(config):
    SEEN.append(config.extra.get("canaryctl"))
"""


def test_plugin_config_section_is_accepted_and_plugin_configured(
    write_runbook, tmp_path, monkeypatch
):
    import importlib
    import sys

    from click.testing import CliRunner

    from runbook.cli import cli

    module = f"canaryctl_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / f"{module}.py").write_text(PLUGIN_WITH_CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.runbook]\nplugins = ["{module}"]\n\n[tool.runbook.canaryctl]\nendpoint = "x"\n'
    )
    path = write_runbook("from runbook import step\n@step\ndef a():\n    pass\n")
    result = CliRunner().invoke(cli, ["list", str(path)])
    assert result.exit_code == 0, result.output
    assert importlib.import_module(module).SEEN == [{"endpoint": "x"}]
    sys.modules.pop(module, None)
