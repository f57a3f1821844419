"""``runbook list`` (and every command that registers the built-in plugins) imports no HTTP
client: httpx comes when a run first asks for the ``http`` resource or an HTTP probe."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def fresh(code: str) -> str:
    """What a fresh interpreter prints running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return out.stdout


def test_list_imports_no_http_client_engine_or_notifier_library(tmp_path):
    (tmp_path / "pyproject.toml").touch()
    path = tmp_path / "hello.py"
    path.write_text("from runbook import step\n\n@step\ndef hello(http, shell):\n    return 1\n")
    out = fresh(
        f"""
        import json, sys
        from runbook.cli import cli
        try:
            cli.main(["list", {str(path)!r}], prog_name="runbook")
        except SystemExit as exc:
            assert not exc.code, exc.code
        heavy = ("httpx", "opentelemetry", "asyncssh", "smtplib", "runbook.engine",
                 "runbook.runner", "runbook_slack.slack")
        print(json.dumps(sorted(m for m in sys.modules if m in heavy
                                or m.startswith(tuple(h + "." for h in heavy)))))
        """
    )
    assert "hello" in out
    assert json.loads(out.splitlines()[-1]) == []


def test_the_http_resource_still_is_an_httpx_client_with_url():
    import httpx

    from runbook.resources import Http, http_resource

    gen = http_resource()
    client = next(gen)
    try:
        assert isinstance(client, Http) and isinstance(client, httpx.Client)
        assert client.url("http://web/{svc}", svc="a b") == "http://web/a%20b"
    finally:
        gen.close()
    assert client.is_closed
