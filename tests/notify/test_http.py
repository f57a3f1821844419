"""Real HTTP on 127.0.0.1: the webhook channel, retries and signatures end to end."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runbook.notify.dispatch import NotificationService
from runbook.plugins import Plugins

from .conftest import RUN, event

pytest.importorskip("runbook_slack")
from runbook_slack.webhook import verify_signature


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.statuses = statuses
        self.requests: list[tuple[str, dict[str, str], bytes, int]] = []


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.server.requests.append((self.path, dict(self.headers), body, status))
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    srv = Recorder([500, 200])
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_webhook_over_real_http_retries_a_500_then_delivers_signed(server: Recorder):
    port = server.server_address[1]
    url = f"webhook+http://127.0.0.1:{port}/hooks/runbook?secret=s3cr3t-value&team=ops"
    failures: list[tuple[str, str]] = []
    svc = NotificationService(
        Plugins(),
        [{"to": url, "on": ["run_failed"]}],
        on_failure=lambda m, u, e: failures.append((u, e)),
        backoff=0.01,
    )

    async def main() -> None:
        async with svc:
            svc.event(event("run_finished", status="rolled_back", error="boom"), RUN)
            svc.event(event("run_finished", status="succeeded"), RUN)  # not routed
            await svc.flush(10)

    asyncio.run(main())
    assert failures == []
    assert [status for *_, status in server.requests] == [500, 200]
    path, headers, body, _ = server.requests[-1]
    assert path == "/hooks/runbook?team=ops"  # the secret never travels in the URL
    assert verify_signature(
        "s3cr3t-value", body, headers["X-Runbook-Signature"], headers["X-Runbook-Timestamp"]
    )
    assert not verify_signature("wrong", body, headers["X-Runbook-Signature"])
    payload = json.loads(body)
    assert payload["message"]["kind"] == "run_finished"
    assert payload["message"]["data"]["status"] == "rolled_back"
    assert payload["message"]["error"] == "boom"
    first_delivery = server.requests[0][1]["X-Runbook-Delivery"]
    assert headers["X-Runbook-Delivery"] == first_delivery  # retries can be deduplicated


def test_webhook_gives_up_and_reports_without_the_secret(server: Recorder):
    server.statuses[:] = [503] * 10
    port = server.server_address[1]
    url = f"webhook+http://127.0.0.1:{port}/hooks/s3cr3t-path-token?secret=s3cr3t-value"
    failures: list[tuple[str, str]] = []
    svc = NotificationService(
        Plugins(),
        [{"to": url}],
        retries=2,
        backoff=0.01,
        on_failure=lambda m, u, e: failures.append((u, e)),
    )

    async def main() -> None:
        async with svc:
            svc.event(event("step_failed", step="s", error="x"), RUN)
            await svc.flush(10)

    asyncio.run(main())
    assert len(server.requests) == 3
    ((shown, error),) = failures
    assert shown == f"webhook+http://127.0.0.1:{port}/***"
    assert "gave up after 3 attempt(s)" in error and "HTTP 503" in error
    assert "s3cr3t" not in error and "s3cr3t" not in shown
