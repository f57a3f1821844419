"""Each leak path found by the fault-injection pass, closed: a secret given with ``-p`` or through
its env variable appears in no byte the process writes (stdout, stderr, the store file, the audit
file, lock files, webhook bodies, ``--json``), in its plain form or any of its encodings."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

pytestmark = pytest.mark.slow

# ASCII with characters that URLs percent-encode, so the encoded forms differ from the plain one
# (and JSON writes it unescaped, so a leak into any JSON file would show as these very bytes).
SECRET = "Tok3n/with+plus=sign ok~x"

CONFIG = """
store = "sqlite:///.runbook/runbook.db"
audit = ["jsonl://.runbook/audit.jsonl", "sqlite://"]
lock = "file://.runbook/locks"
"""


def encodings(secret: str) -> dict[str, bytes]:
    raw = secret.encode()
    return {
        "plain": raw,
        "upper": secret.upper().encode(),
        "lower": secret.lower().encode(),
        "base64": base64.b64encode(raw),
        "base64 unpadded": base64.b64encode(raw).rstrip(b"="),
        "base64url": base64.urlsafe_b64encode(raw),
        "url": quote(secret, safe="").encode(),
        "url (path)": quote(secret).encode(),
        "url (form)": quote_plus(secret).encode(),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }


def assert_clean(blob: bytes, where: str, secret: str = SECRET) -> None:
    for name, form in encodings(secret).items():
        assert form not in blob, f"secret ({name}) found in {where}"


class _Sink(BaseHTTPRequestHandler):
    """A local webhook receiver (and a 404 for the httpx case); keeps every request body."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        type(self).bodies.append(self.rfile.read(length))
        self._answer(200)

    def do_GET(self) -> None:
        self._answer(404)

    def _answer(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    _Sink.bodies = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _project(tmp_path: Path, body: str, config: str = CONFIG) -> Path:
    (tmp_path / "runbook.toml").write_text(config)
    header = (
        "from runbook import param, probe, step\n"
        'token = param("token", secret=True, env="RB_TOKEN")\n'
    )
    (tmp_path / "rb.py").write_text(header + textwrap.dedent(body))
    return tmp_path / "rb.py"


def _exec(
    tmp_path: Path, source: str, *args: str, secret: str = SECRET
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    env["RUNBOOK_ACTOR"] = "alice"
    cmd = [sys.executable, "-m", "runbook", "exec", "rb.py", *args]
    if source == "-p":
        cmd += ["-p", f"token={secret}"]
    else:
        env["RB_TOKEN"] = secret
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=120)


def _everything(tmp_path: Path, procs: list[subprocess.CompletedProcess]) -> bytes:
    out = b"".join(p.stdout + p.stderr for p in procs)
    files = b"".join(p.read_bytes() for p in (tmp_path / ".runbook").rglob("*") if p.is_file())
    return out + files


SOURCES = ["-p", "env"]


@pytest.mark.parametrize("source", SOURCES)
def test_progress_is_masked(tmp_path: Path, source: str) -> None:
    _project(
        tmp_path,
        """
        @step
        def wait(ctx, params):
            ctx.progress("polling with " + params.token, 0.5)
            ctx.progress("POLLING WITH " + params.token.upper(), 0.9)
        """,
    )
    text = _exec(tmp_path, source)
    assert text.returncode == 0, text.stderr.decode()
    assert b"polling with ***" in text.stdout and b"POLLING WITH ***" in text.stdout
    assert_clean(_everything(tmp_path, [text, _exec(tmp_path, source, "--json")]), "output")


@pytest.mark.parametrize("source", SOURCES)
def test_notify_resource_is_masked_on_console_and_webhook(
    tmp_path: Path, source: str, server: int
) -> None:
    config = CONFIG + (
        f'notify = [{{to = "webhook+http://127.0.0.1:{server}/hook", on = ["adhoc"]}},'
        ' {to = "console://stderr", on = ["adhoc"]}]\n'
    )
    _project(
        tmp_path,
        """
        import base64

        @step
        def tell(notify, params):
            encoded = base64.b64encode(params.token.encode()).decode()
            notify("token is " + params.token, text=encoded)
        """,
        config,
    )
    text = _exec(tmp_path, source)
    assert text.returncode == 0, text.stderr.decode()
    assert b"token is ***" in text.stderr
    assert _Sink.bodies and b"token is ***" in _Sink.bodies[0]
    assert_clean(b"".join(_Sink.bodies), "webhook body")
    assert_clean(_everything(tmp_path, [text, _exec(tmp_path, source, "--json")]), "output")


@pytest.mark.parametrize("source", SOURCES)
def test_dry_run_probe_outputs_are_masked(tmp_path: Path, source: str) -> None:
    _project(
        tmp_path,
        """
        @probe
        def current(params):
            return {"seen": params.token, "upper": params.token.upper()}

        @step
        def change(current):
            return 1
        """,
    )
    text = _exec(tmp_path, source, "--dry-run")
    as_json = _exec(tmp_path, source, "--dry-run", "--json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr.decode()
    assert b"current" in text.stdout and b'"seen": "***"' in text.stdout
    assert json.loads(as_json.stdout)["steps"]["current"]["output"]["seen"] == "***"
    assert_clean(_everything(tmp_path, [text, as_json]), "dry-run output")


@pytest.mark.parametrize("source", SOURCES)
def test_httpx_errors_are_masked_percent_encoded(tmp_path: Path, source: str, server: int) -> None:
    _project(
        tmp_path,
        f"""
        @step
        def call(http, params):
            url = "http://127.0.0.1:{server}/deploy"
            http.get(url, params={{"token": params.token}}).raise_for_status()
        """,
    )
    text = _exec(tmp_path, source)
    as_json = _exec(tmp_path, source, "--json")
    assert text.returncode == 1 and b"404 Not Found" in text.stdout + text.stderr
    assert_clean(_everything(tmp_path, [text, as_json]), "httpx error")


@pytest.mark.parametrize("source", SOURCES)
def test_secret_in_a_lock_template_is_refused(tmp_path: Path, source: str) -> None:
    _project(
        tmp_path,
        """
        @step(lock="deploy-{params.token}")
        def a():
            return 1
        """,
    )
    text = _exec(tmp_path, source)
    assert text.returncode == 2
    assert b"secret param 'token'" in text.stderr and b"Traceback" not in text.stderr
    assert_clean(_everything(tmp_path, [text]), "lock files")


@pytest.mark.parametrize("source", SOURCES)
def test_short_secret_is_a_usage_error(tmp_path: Path, source: str) -> None:
    _project(tmp_path, "@step\ndef a(params):\n    return 1\n")
    text = _exec(tmp_path, source, secret="abc")
    assert text.returncode == 2
    assert b"'token'" in text.stderr and b"at least 4 characters" in text.stderr
    assert not (tmp_path / ".runbook" / "runbook.db").exists() or b"abc" not in _everything(
        tmp_path, []
    )


@pytest.mark.parametrize("source", SOURCES)
def test_a_common_word_secret_does_not_corrupt_json_keys(tmp_path: Path, source: str) -> None:
    _project(
        tmp_path,
        """
        @step
        def a(params):
            return {"word": params.token, "note": "one step at a time"}
        """,
    )
    proc = _exec(tmp_path, source, "--json", secret="step")
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert "steps" in doc and set(doc["steps"]) == {"a"}
    assert doc["steps"]["a"]["output"] == {"word": "***", "note": "one *** at a time"}
    assert all("step" in event for event in doc["audit"])
    assert [e["kind"] for e in doc["audit"]][:2] == ["run_started", "step_started"]


@pytest.mark.parametrize("source", SOURCES)
def test_encoded_and_recased_secrets_are_masked_everywhere(tmp_path: Path, source: str) -> None:
    _project(
        tmp_path,
        """
        import base64
        from urllib.parse import quote

        @step
        def a(params, ctx):
            t = params.token
            forms = {
                "upper": t.upper(),
                "b64": base64.b64encode(t.encode()).decode(),
                "b64url": base64.urlsafe_b64encode(t.encode()).decode(),
                "basic": "Basic " + base64.b64encode(("deploy:" + t).encode()).decode(),
                "url": quote(t, safe=""),
                "hex": t.encode().hex(),
            }
            ctx.record_change("registry", None, forms)
            return forms

        @step
        def b(a, params):
            raise RuntimeError("rejected " + params.token.lower() + " " + a["hex"].upper())
        """,
    )
    text = _exec(tmp_path, source)
    as_json = _exec(tmp_path, source, "--json")
    assert text.returncode == 1 and as_json.returncode == 1
    assert b"rejected ***" in text.stdout
    assert_clean(_everything(tmp_path, [text, as_json]), "store, audit and output")
    basic = base64.b64encode(("deploy:" + SECRET).encode())
    assert basic not in _everything(tmp_path, [text, as_json])
