"""``runbook exec`` in-process: output, exit codes, errors, --json and --dry-run."""

from __future__ import annotations

import json

import pytest

from runbook.locks.file import FileLocks

from .helpers import EXAMPLES
from .samples import BROKEN_DEFINITION, BROKEN_IMPORT, FAILING, GATED, GREET, ROLLBACK_FAILS


def one_line_error(result) -> str:
    """Usage errors are one line on stderr, nothing on stdout, and no traceback."""
    assert result.stdout == "", result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_exec_succeeds_with_pytest_like_output(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "-p", "name=ops", "-p", "count=2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"runbook {path} · env dev · actor tester · run ")
    assert lines[1].startswith("✓ look")
    assert any(line.startswith("✓ write") for line in lines)
    assert "↷ already  skipped (when)" in lines
    assert lines[-1].startswith("run succeeded: 3 succeeded, 1 skipped in ")
    assert (project.root / "out.txt").read_text() == "hello ops\nhello ops\n"


SHIFTS_TRAFFIC = """
from pathlib import Path

from runbook import step


@step
def install():
    Path("installed").write_text("yes")


@step(after=[install])
def shift(router):
    router.set_weights("web", {"blue": 0, "green": 100})
"""


def test_a_bad_router_url_stops_exec_before_any_step(project, invoke):
    """The router is opened when a step first asks for it: a bad URL was found after install
    had run. It is checked with the rest of the configuration, before the run starts."""
    with open(project.root / "runbook.toml", "a") as config:
        config.write('router = "file://"\n')
    path = project.write("shift.py", SHIFTS_TRAFFIC)
    result = invoke("exec", path, "--yes")
    assert result.exit_code == 2, result.output
    assert one_line_error(result) == "runbook: error: router: file://: has no path (file://PATH)\n"
    assert not (project.root / "installed").exists()


def test_exec_missing_file(project, invoke):
    result = invoke("exec", "missing.py")
    assert result.exit_code == 2
    assert "no such runbook file: missing.py" in one_line_error(result)


def test_exec_import_error(project, invoke):
    path = project.write("broken.py", BROKEN_IMPORT)
    result = invoke("exec", path)
    assert result.exit_code == 2
    err = one_line_error(result)
    assert f"{path}:2: import failed: ModuleNotFoundError" in err


def test_exec_definition_error_names_file_and_line(project, invoke):
    path = project.write("bad.py", BROKEN_DEFINITION)
    result = invoke("exec", path)
    assert result.exit_code == 2
    assert f"{path}:5: step 'first': parameter 'nonexistent_thing'" in one_line_error(result)


def test_exec_bad_param_value_names_the_parameter(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "-p", "count=many")
    assert result.exit_code == 2
    assert "parameter 'count'" in one_line_error(result)
    assert not (project.root / "out.txt").exists()


def test_exec_param_out_of_choices_and_unknown_and_malformed(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "-p", "count=9")
    assert result.exit_code == 2 and "parameter 'count'" in one_line_error(result)
    result = invoke("exec", path, "-p", "colour=red")
    assert result.exit_code == 2 and "unknown parameter 'colour'" in one_line_error(result)
    result = invoke("exec", path, "-p", "count")
    assert result.exit_code == 2 and "-p expects key=value, got 'count'" in one_line_error(result)


def test_exec_secret_param_never_printed(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "-p", "token=hunter2", "--json")
    assert result.exit_code == 0
    assert "hunter2" not in result.stdout


def test_exec_unknown_env_when_envs_are_configured(project, invoke):
    with (project.root / "runbook.toml").open("a") as f:
        f.write('\n[env.dev]\nprotection = "none"\n[env.prod]\nprotection = "strict"\n')
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "--env", "prdo")
    assert result.exit_code == 2
    assert "unknown env 'prdo'; configured: dev, prod" in one_line_error(result)
    assert not (project.root / "out.txt").exists()


def test_exec_env_without_any_configured_envs_is_standard(project, invoke):
    path = project.write("gated.py", GATED)
    result = invoke("exec", path, "--env", "staging")
    assert result.exit_code == 3  # standard protection: the gate waits for a human
    assert "env staging" in result.stdout


def test_exec_strict_env_refuses_yes(project, invoke):
    with (project.root / "runbook.toml").open("a") as f:
        f.write('\n[env.prod]\nprotection = "strict"\n')
    path = project.write("gated.py", GATED)
    result = invoke("exec", path, "--env", "prod", "--yes")
    assert result.exit_code == 2
    assert "--yes is refused in env 'prod'" in one_line_error(result)


def test_exec_json_is_exactly_one_document(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)  # the whole of stdout parses: no reporter lines
    assert data["status"] == "succeeded" and data["exit_code"] == 0
    assert data["steps"]["write"]["status"] == "succeeded"
    assert data["steps"]["already"] == {
        **data["steps"]["already"],
        "status": "skipped",
        "reason": "when",
    }
    assert data["audit"][0]["kind"] == "run_started"


def test_exec_failure_rolls_back_and_exits_1(project, invoke):
    path = project.write("failing.py", FAILING)
    result = invoke("exec", path)
    assert result.exit_code == 1
    out = result.stdout
    assert "✗ switch  AssertionError: traffic did not move" in out
    assert "↺ stage   rolled back" in out
    assert "run rolled back: 1 failed, 1 rolled back in " in out
    assert (project.root / "unstaged").exists() and not (project.root / "staged").exists()


def test_exec_failed_rollback_exits_4_and_asks_for_a_human(project, invoke):
    path = project.write("rb.py", ROLLBACK_FAILS)
    result = invoke("exec", path)
    assert result.exit_code == 4
    assert "✗ stage   rollback failed: RuntimeError: cannot reach the registry" in result.stdout
    assert "MANUAL INTERVENTION NEEDED" in result.stdout


def test_exec_pauses_at_a_gate_with_exit_3_and_the_commands(project, invoke):
    path = project.write("gated.py", GATED)
    result = invoke("exec", path)
    assert result.exit_code == 3
    run_id = json.loads(invoke("runs", "--json").stdout)["runs"][0]["run_id"]
    assert "⏸ migrate  awaiting approval" in result.stdout
    assert f"  runbook approve {run_id} --step migrate\n  runbook resume {run_id}\n" in (
        result.stdout
    )
    assert not (project.root / "migrated").exists()


def test_exec_yes_approves_as_the_actor_in_a_standard_env(project, invoke):
    path = project.write("gated.py", GATED)
    result = invoke("exec", path, "--yes")
    assert result.exit_code == 0, result.output
    assert (project.root / "migrated").exists()


def test_exec_dry_run_prints_the_plan_and_changes_nothing(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "--dry-run", "-p", "name=ops")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert not (project.root / "out.txt").exists()
    assert "DRY RUN" in out.splitlines()[0]
    assert "  run lock: greet-dev" in out
    assert '  level 1\n    ✓ look     probe  → {"exists": false}' in out
    assert "would run · rollback unwrite" in out
    assert "↷ already  step   skipped (when)" in out
    assert "lock check-ops" in out  # the template, expanded with env and params
    assert "; nothing was changed" in out.splitlines()[-1]
    # Nothing in the store either: a dry run is not a run.
    assert json.loads(invoke("runs", "--json").stdout)["runs"] == []


def test_exec_dry_run_json(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("exec", path, "--dry-run", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["dry_run"] is True
    assert data["steps"]["look"]["status"] == "succeeded"
    assert data["steps"]["write"]["status"] == "planned"
    assert not (project.root / "out.txt").exists()


def test_exec_dry_run_of_the_deploy_example(project, invoke, servers):
    path = project.example("deploy.py")
    result = invoke("exec", path, "-p", "version=1.0", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "✓ current   probe  → null" in result.stdout
    assert "    · build     step   would run · rollback remove_build" in result.stdout
    assert not servers.exists()


def test_exec_lock_held_by_another_run_exits_5(project, invoke):
    locks = FileLocks.open(f"file://{project.root}/.runbook/locks")
    lease = locks.acquire("greet-dev", "other-run", actor="bob", lease=60)
    assert lease is not None
    try:
        path = project.write("greet.py", GREET)
        result = invoke("exec", path)
    finally:
        locks.release(lease)
    assert result.exit_code == 5
    assert result.stderr.count("\n") == 1  # the header was printed, then one line naming it
    assert "lock 'greet-dev' is held by run other-run (bob)" in result.stderr
    assert not (project.root / "out.txt").exists()


def test_exec_usage_errors_from_options(project, invoke):
    path = project.write("greet.py", GREET)
    assert invoke("exec", path, "--max-parallel", "0").exit_code == 2
    assert invoke("exec", path, "--lock-timeout", "-1").exit_code == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("exec",), "Missing argument 'PATH'. (see 'runbook exec --help')"),
        (("exec", "x.py", "--max-parallel", "0"), "Invalid value for '--max-parallel'"),
        (("bogus",), "No such command 'bogus'"),
        (("--bogus",), "--bogus"),  # click 8.2 writes "No such option: --bogus"
        (("--bogus",), "(see 'runbook --help')"),
        (("audit", "verify", "--bogus"), "(see 'runbook audit verify --help')"),
        (("audit", "--since", "3000000d"), "outside the years 1 to 9999"),
        (("runs", "--limit", "x"), "Invalid value for '--limit'"),
    ],
)
def test_a_usage_error_is_one_line_like_every_other_error(invoke, args, says):
    result = invoke(*args)
    assert result.exit_code == 2
    line = one_line_error(result)
    assert line.startswith("runbook: error: ") and says in line, line


def test_exec_bad_config_is_exit_2(project, invoke):
    (project.root / "runbook.toml").write_text('protecton = "strict"\n')
    path = project.write("greet.py", GREET)
    result = invoke("exec", path)
    assert result.exit_code == 2
    assert "unknown key protecton" in one_line_error(result)


def test_exec_db_migration_example_pauses_then_yes(project, invoke):
    path = project.example("db_migration.py")
    result = invoke("exec", path, "--dry-run")
    assert result.exit_code == 0
    assert '"pending": [1, 2, 3]' in result.stdout
    result = invoke("exec", path, "--yes")
    assert result.exit_code == 0, result.output
    assert (project.root / ".runbook" / "demo.db").exists()
    assert str(EXAMPLES)  # the example ran from the project copy, not the repo
