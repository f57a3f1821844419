"""A bad ``durability`` in the config is one clear line and exit 2, like other config errors."""

from __future__ import annotations

from .test_exec import one_line_error


def test_bad_durability_is_one_line_and_exit_2(project, invoke):
    (project.root / "runbook.toml").write_text('durability = "fsync"\n')
    path = project.write("one.py", "from runbook import step\n\n@step\ndef a():\n    return 1\n")
    result = invoke("exec", path)
    assert result.exit_code == 2
    err = one_line_error(result)
    assert "durability: expected 'power' or 'process', got 'fsync'" in err


def test_process_durability_runs(project, invoke):
    (project.root / "runbook.toml").write_text(
        'store = "sqlite:///.runbook/runbook.db"\naudit = ["jsonl://.runbook/audit.jsonl"]\n'
        'durability = "process"\n'
    )
    path = project.write("one.py", "from runbook import step\n\n@step\ndef a():\n    return 1\n")
    result = invoke("exec", path)
    assert result.exit_code == 0, result.output
    assert invoke("audit", "verify").exit_code == 0
