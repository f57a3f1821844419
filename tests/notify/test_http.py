"""Real HTTP on 127.0.0.1: the webhook channel, retries and signatures end to end."""

from __future__ import annotations

import asyncio
import json

import pytest

from runbook.notify.dispatch import NotificationService
from runbook.plugins import Plugins

from .conftest import RUN, Recorder, event

pytest.importorskip("runbook_slack")
from runbook_slack.webhook import verify_signature


def test_webhook_over_real_http_retries_a_500_then_delivers_signed(server: Recorder):
    server.statuses[:] = [500, 200]
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
