"""The CLI starts without importing what a command does not need, and shows the same help.

No timings here (they depend on the machine; ``bench/startup.py`` measures them): what is
checked is which modules a fresh interpreter has imported after ``runbook --help``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from runbook.cli import BUILTIN_COMMANDS, COMMAND_MODULES, LazyCommands, LazyGroup, cli

# What ``runbook --help`` must not import: the engine, the stores, the audit, httpx, the
# notifier and SSH libraries, asyncio.
HEAVY = (
    "asyncio",
    "asyncssh",
    "httpx",
    "smtplib",
    "sqlite3",
    "runbook.audit",
    "runbook.collect",
    "runbook.engine",
    "runbook.runner",
    "runbook.store",
    "runbook.cli.exec_",
    "runbook.cli.runs",
    "runbook_slack.slack",
    "runbook_email.smtp",
    "temporalio",
)


def fresh(code: str) -> str:
    """What a fresh interpreter prints running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return out.stdout


def test_help_imports_none_of_the_commands():
    out = fresh(
        f"""
        import json, sys
        from runbook.cli import cli
        try:
            cli.main(["--help"], prog_name="runbook")
        except SystemExit:
            pass
        heavy = {HEAVY!r}
        print(json.dumps([m for m in sys.modules if m.split(".")[0] in heavy or m in heavy
                          or m.startswith(tuple(h + "." for h in heavy))]))
        """
    )
    imported = json.loads(out.splitlines()[-1])
    assert imported == []


def test_a_command_imports_its_own_module_only():
    out = fresh(
        """
        import json, sys
        from runbook.cli import cli
        try:
            cli.main(["locks", "--help"], prog_name="runbook")
        except SystemExit:
            pass
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("runbook.cli."))))
        """
    )
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "runbook.cli.locks" in loaded
    assert not loaded & {"runbook.cli.exec_", "runbook.cli.audit", "runbook.cli.runs"}


@pytest.fixture(scope="module")
def project_with_a_run(tmp_path_factory):
    """A project (SQLite store, JSONL trail) holding one finished run; its folder and run id."""
    root = tmp_path_factory.mktemp("reading")
    (root / "pyproject.toml").write_text(
        '[tool.runbook]\nstore = "sqlite:///.runbook/runbook.db"\naudit = ["jsonl://.runbook/a.jsonl"]\n'
    )
    (root / "rb.py").write_text("from runbook import step\n\n@step\ndef a():\n    return 1\n")
    run = [sys.executable, "-m", "runbook"]
    subprocess.run([*run, "exec", "rb.py"], cwd=root, check=True, capture_output=True)
    listed = subprocess.run(
        [*run, "runs", "--json"], cwd=root, check=True, capture_output=True, text=True
    )
    runs = json.loads(listed.stdout)
    return root, (runs["runs"] if isinstance(runs, dict) else runs)[0]["run_id"]


def loaded_by(argv: list[str], root: Path, prefixes: tuple[str, ...]) -> tuple[str, list[str]]:
    """(stdout, the modules named by ``prefixes`` that a command line imported), in a fresh
    interpreter; the command must succeed."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import json, sys
                from runbook.cli import cli
                code = None
                try:
                    cli.main({argv!r}, prog_name="runbook")
                except SystemExit as exc:
                    code = exc.code
                loaded = sorted(m for m in sys.modules if m.startswith({prefixes!r}))
                print(json.dumps([code, loaded]))
                """
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    code, loaded = json.loads(out.stdout.splitlines()[-1])
    assert code in (0, None), out.stderr
    return out.stdout, loaded


@pytest.mark.parametrize(
    "argv",
    [["runs"], ["runs", "--json"], ["show", "{run}"], ["show", "{run}", "--json"]],
    ids=["runs", "runs-json", "show", "show-json"],
)
def test_reading_a_run_does_not_import_the_engine(argv, project_with_a_run):
    """``runbook runs`` and ``show`` read the store: they open a Runner (``runs`` applies expired
    gates, ``show`` rolls a crashed run forward from its trail) but run nothing, so the engine
    (and OpenTelemetry, which it imports) stays unloaded (``runbook list``: the test below), and
    so do the built-in strategies, which a Runner registers without importing them."""
    root, run_id = project_with_a_run
    engine = (
        "runbook.engine",
        "runbook.assembly",
        "runbook.attempts",
        "opentelemetry",
        "runbook.strategies",
        "runbook.inventory",
    )
    stdout, loaded = loaded_by([arg.format(run=run_id) for arg in argv], root, engine)
    assert run_id in stdout
    assert loaded == []


@pytest.mark.parametrize("argv", [["runs"], ["runs", "--json"]], ids=["runs", "runs-json"])
def test_listing_runs_does_not_import_what_drives_a_run(argv, project_with_a_run):
    """``runbook runs`` builds its Runner through runbook.cli.building: what ``exec`` and
    ``resume`` need to drive a run (signals, the JUnit writer, the run graph's views, the
    terminal reporter) stays unloaded (18 modules; ~17 ms of the import, median of 40)."""
    root, run_id = project_with_a_run
    driving = (
        "runbook.cli.exec_",
        "runbook.cli.junit",
        "runbook.cli.inspect",
        "runbook.cli.reporter",
        "runbook.cli.graphview",
        "runbook.cli.retry",
        "xml",
    )
    stdout, loaded = loaded_by(argv, root, driving)
    assert run_id in stdout
    assert loaded == []


@pytest.mark.parametrize("width", [50, 80, 100, 200])
def test_help_is_the_same_as_with_every_command_imported(width):
    out = fresh(
        f"""
        import json
        import click
        from runbook.cli import cli

        def text():
            ctx = click.Context(cli, info_name="runbook", terminal_width={width})
            return cli.get_help(ctx)

        lazy = text()
        everything = {{name: cli.commands[name] for name in cli.commands}}
        print(json.dumps([lazy, text(), sorted(everything)]))
        """
    )
    lazy, loaded, names = json.loads(out.splitlines()[-1])
    assert lazy == loaded
    for name in names:
        assert f"\n  {name} " in lazy


def test_every_summary_is_its_commands_first_paragraph():
    for name, (module, attr, summary) in BUILTIN_COMMANDS.items():
        command = getattr(importlib.import_module(module), attr)
        assert command.name == name
        assert (command.help or "").split("\n\n")[0].strip() == summary, name
        # The stand-in shown by --help has only the summary: these would change its line.
        assert command.short_help is None and not command.hidden and not command.deprecated


def test_every_command_a_module_defines_is_registered():
    defined = {c.name for m in COMMAND_MODULES for c in importlib.import_module(m).COMMANDS}
    assert defined == set(BUILTIN_COMMANDS)


def test_a_mistyped_command_still_suggests_the_real_one():
    result = CliRunner().invoke(cli, ["exce"])
    assert result.exit_code == 2
    assert "No such command 'exce'. Did you mean 'exec'?" in result.output


def test_plugin_commands_are_listed_and_may_replace_a_builtin():
    @click.command("locks")
    def mine() -> None:
        """Mine, not runbook's."""

    @click.command("extra")
    def extra() -> None:
        """A plugin's command."""

    group = LazyGroup("runbook")
    group.add_command(mine)
    group.add_command(extra)
    assert group.commands["locks"] is mine and "extra" in group.commands
    help_text = CliRunner().invoke(group, ["--help"]).output
    assert "Mine, not runbook's." in help_text and "A plugin's command." in help_text
    assert "List held locks" not in help_text


def test_lazy_commands_behave_as_a_mapping():
    commands = LazyCommands({"locks": BUILTIN_COMMANDS["locks"]})
    assert list(commands) == ["locks"] and len(commands) == 1 and "locks" in commands
    assert commands["locks"].name == "locks"
    assert "nope" not in commands and commands.get("nope") is None
    with pytest.raises(KeyError):
        commands["nope"]
    del commands["locks"]
    assert len(commands) == 0 and "locks" not in commands
    with pytest.raises(KeyError):
        del commands["locks"]


def test_list_imports_no_engine_store_delivery_or_signing(tmp_path):
    """``runbook list`` collects and shows: the configuration's notification rules are checked
    (runbook.notify.rules), but nothing is delivered (asyncio), and no store, engine or signing
    library is imported. In a fresh interpreter not measured by coverage (it imports sqlite3):
    see tests/core/test_plugins_setup.py."""
    import os

    (tmp_path / "pyproject.toml").write_text(
        '[tool.runbook]\nstore = "sqlite:///.runbook/runs.db"\n\n'
        '[[tool.runbook.notify]]\nto = "console://"\non = ["run_failed"]\n'
    )
    (tmp_path / "rb.py").write_text("from runbook import step\n\n@step\ndef a(shell):\n    pass\n")
    heavy = (
        "asyncio",
        "sqlite3",
        "cryptography",
        "runbook.engine",
        "runbook.runner",
        "runbook.store",
        "runbook.notify.dispatch",
    )
    code = f"""
        import json, sys
        from runbook.cli import cli
        try:
            cli.main(["list", "rb.py"], prog_name="runbook")
        except SystemExit as exc:
            assert not exc.code, exc.code
        heavy = {heavy!r}
        print(json.dumps([[m for m in sys.modules if m in heavy
                           or m.startswith(tuple(h + "." for h in heavy))],
                          "runbook.notify.rules" in sys.modules]))
        """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    )
    imported, rules_checked = json.loads(out.stdout.splitlines()[-1])
    assert imported == [] and rules_checked


def test_signing_is_imported_when_a_key_is_first_looked_at():
    out = fresh(
        """
        import json, sys
        import runbook.runner
        from runbook import sshsig
        before = "cryptography" in sys.modules
        sshsig.available()
        print(json.dumps([before, "cryptography" in sys.modules, sshsig.available()]))
        """
    )
    before, after, available = json.loads(out.splitlines()[-1])
    assert before is False
    assert after is available  # imported when installed (the test extras install it)
