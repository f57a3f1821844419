"""``runbook list``, ``runbook graph`` and ``runbook plugins``: collect only, nothing runs."""

from __future__ import annotations

import json

from .helpers import EXAMPLES
from .samples import BROKEN_DEFINITION, BROKEN_IMPORT, GREET


def test_list_shows_params_steps_gates_locks_and_rollbacks(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("list", path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Greets into a file" in out
    assert "run lock: greet-{env}" in out
    assert "count" in out and "choices 1..4" in out and "how many times" in out
    # A secret's default is never shown.
    assert "s3cret-value" not in out and "default ***" in out
    assert "look" in out and "probe" in out
    assert "rollback unwrite" in out
    assert "after write" in out and "retries 2" in out and "timeout 5s" in out
    assert "lock check-{params.name}" in out and "tags write" in out
    assert not (project.root / "out.txt").exists()  # collecting ran no step


def test_list_json_is_one_document(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("list", path, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    steps = {s["name"]: s for s in data["steps"]}
    assert list(steps) == ["look", "write", "already", "check"]
    assert steps["write"]["rollback"] == "unwrite" and steps["write"]["deps"] == ["look"]
    assert steps["check"]["after"] == ["write"] and steps["check"]["level"] == 3
    assert steps["look"]["kind"] == "probe"
    params = {p["name"]: p for p in data["params"]}
    assert params["token"] == {**params["token"], "secret": True, "default": "***"}
    assert params["count"]["choices"] == "1..4" and params["count"]["type"] == "int"
    assert data["lock"] == "greet-{env}"


def test_list_example_with_approval_gate(project, invoke):
    result = invoke("list", EXAMPLES / "db_migration.py")
    assert result.exit_code == 0
    assert "approval" in result.stdout and "lock db-migration-{env}" in result.stdout
    assert "rollback restore_backup" in result.stdout and "not required" in result.stdout


def test_list_missing_file_is_one_line_exit_2(project, invoke):
    result = invoke("list", "nope.py")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().count("\n") == 0
    assert "no such runbook file: nope.py" in result.stderr


def test_list_import_error_is_shown_without_traceback(project, invoke):
    path = project.write("broken.py", BROKEN_IMPORT)
    result = invoke("list", path)
    assert result.exit_code == 2
    assert "ModuleNotFoundError" in result.stderr and "no_such_module_for_runbook_tests" in (
        result.stderr
    )
    assert f"{path}:2" in result.stderr
    assert "Traceback" not in result.stderr


def test_list_definition_error_names_file_and_line(project, invoke):
    path = project.write("bad.py", BROKEN_DEFINITION)
    result = invoke("list", path)
    assert result.exit_code == 2
    assert f"{path}:5" in result.stderr
    assert "nonexistent_thing" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_graph_text_is_layered_with_edges(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("graph", path)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "greet: 4 steps in 3 levels"
    assert " 1 (look)" in lines
    assert " 2 [write]  [already]" in lines
    assert " 3 [check]" in lines
    assert "  look  ──▶ write" in result.stdout
    assert "  write ┄┄▶ check  (after)" in result.stdout
    assert "write ↺   unwrite  (rollback)" in result.stdout


def test_graph_mermaid_marks_gates_probes_and_dashed_rollbacks(project, invoke):
    result = invoke("graph", EXAMPLES / "db_migration.py", "--format", "mermaid")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("flowchart TD\n")
    assert 's0(["analyze"])' in out  # probe: stadium
    assert 's2{{"migrate<br/>approval<br/>lock db-migration-{env}"}}' in out  # gate: hexagon
    assert "s2 -.->|rollback| r0" in out and 'r0[/"↺ restore_backup"/]' in out
    assert "s3 ==>|after| s4" in out  # cleanup after verify


def test_graph_dot_is_a_digraph(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("graph", path, "--format", "dot")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith('digraph "greet" {') and out.rstrip().endswith("}")
    assert '"look" [label="look", shape=ellipse' in out
    assert '"write" -> "check" [style=bold, label="after"];' in out
    assert '"write" -> "rollback:unwrite" [style=dashed' in out
    assert '{ rank=same; "write"; "already"; }' in out


def test_graph_rejects_unknown_format(project, invoke):
    path = project.write("greet.py", GREET)
    result = invoke("graph", path, "--format", "png")
    assert result.exit_code == 2
    assert "png" in result.stderr


def test_plugins_lists_builtins_with_hooks(project, invoke):
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "runbook.resources" in result.stdout and "builtin" in result.stdout
    assert "resources" in result.stdout  # the hook it implements, without the prefix


def test_plugins_json_and_extra_module(project, invoke):
    project.write(
        "myplugin.py",
        ("from runbook import hookimpl\n\n\n@hookimpl\ndef runbook_run_started(run):\n    pass\n"),
    )
    import sys

    sys.path.insert(0, str(project.root))
    try:
        result = invoke("plugins", "--json", "-P", "myplugin")
    finally:
        sys.path.remove(str(project.root))
        sys.modules.pop("myplugin", None)
    assert result.exit_code == 0
    data = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert data["myplugin"]["source"] == "module"
    assert data["myplugin"]["hooks"] == ["runbook_run_started"]
    assert data["runbook.resources"]["source"] == "builtin"


def test_plugins_unknown_module_is_exit_2(project, invoke):
    result = invoke("plugins", "-P", "no_such_plugin_module_xyz")
    assert result.exit_code == 2
    assert "no_such_plugin_module_xyz" in result.stderr
