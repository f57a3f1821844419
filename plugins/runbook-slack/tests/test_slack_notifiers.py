"""runbook-slack: payload shapes, signatures, retries and secrecy, over respx-mocked HTTP."""

from __future__ import annotations

import asyncio
import json
from email.utils import formatdate

import httpx
import pytest
import respx
from runbook_slack import SlackNotifier, TeamsNotifier, WebhookNotifier, sign, verify_signature
from runbook_slack._http import retry_after

from runbook.audit.events import AuditEvent
from runbook.context import RunInfo
from runbook.errors import ConfigError, NotificationError
from runbook.notify import Message, TransientNotificationError
from runbook.notify.dispatch import NotificationService
from runbook.notify.templates import build_message
from runbook.plugins import Plugins

TOKEN = "XXXXSECRETTOKENXXXX"
SLACK = f"slack://hooks.slack.com/services/T000/B000/{TOKEN}"
SLACK_HTTPS = f"https://hooks.slack.com/services/T000/B000/{TOKEN}"
RUN = RunInfo(
    run_id="01JRUN",
    runbook="runbooks/deploy.py",
    name="deploy",
    sha256="0" * 64,
    env="prod",
    actor="alice",
)


def failed_step() -> Message:
    event = AuditEvent(
        kind="step_failed",
        run_id="01JRUN",
        step="switch",
        actor="alice",
        env="prod",
        data={"error": "RuntimeError: router said <no> & ```x```"},
    )
    return build_message(event, RUN)


def approval() -> Message:
    return build_message(
        AuditEvent(
            kind="approval_requested", run_id="01JRUN", step="switch", actor="alice", env="prod"
        ),
        RUN,
    )


def send(notifier, message: Message) -> None:
    async def main() -> None:
        try:
            await notifier.send(message)
        finally:
            await notifier.aclose()

    asyncio.run(main())


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def test_entry_point_registers_the_schemes():
    providers = Plugins().providers("notifier")
    assert {"slack", "teams", "webhook+https", "webhook+http"} <= set(providers)
    assert isinstance(Plugins().open("notifier", SLACK), SlackNotifier)


@respx.mock
def test_slack_block_kit_payload():
    route = respx.post(SLACK_HTTPS).mock(return_value=httpx.Response(200, text="ok"))
    send(SlackNotifier(SLACK), failed_step())
    payload = json.loads(route.calls.last.request.content)
    blocks = payload["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "deploy: step switch failed in prod", "emoji": True},
    }
    fields = next(b["fields"] for b in blocks if "fields" in b)
    texts = [f["text"] for f in fields]
    assert texts == [
        "*Runbook*\ndeploy",
        "*Env*\nprod",
        "*Actor*\nalice",
        "*Step*\nswitch",
        "*Run id*\n01JRUN",
    ]
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    error = next(s for s in sections if s.startswith("*Error*"))
    assert error == "*Error*\n```RuntimeError: router said &lt;no&gt; &amp; '''x'''```"
    command = next(s for s in sections if s.startswith("*Command*"))
    assert command == "*Command*\n```runbook show 01JRUN```"
    assert payload["text"].startswith("[ERROR] deploy: step switch failed in prod")
    assert route.calls.last.request.headers["content-type"] == "application/json"


@respx.mock
def test_slack_approval_has_the_approve_command():
    route = respx.post(SLACK_HTTPS).mock(return_value=httpx.Response(200, text="ok"))
    send(SlackNotifier(SLACK), approval())
    payload = json.loads(route.calls.last.request.content)
    assert "runbook approve 01JRUN --step switch" in json.dumps(payload["blocks"])
    assert "run: runbook approve 01JRUN --step switch" in payload["text"]


def test_slack_long_title_and_error_fit_slack_limits():
    from runbook_slack.slack import blocks_payload

    message = Message(title="t" * 400, error="e" * 10_000)
    blocks = blocks_payload(message)["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    assert all(
        len(b["text"]["text"]) <= 3000 for b in blocks if "text" in b and b["type"] == "section"
    )


@respx.mock
def test_teams_adaptive_card_payload():
    route = respx.post("https://example.webhook.office.com/webhookb2/abc?sig=zzz").mock(
        return_value=httpx.Response(202)
    )
    send(TeamsNotifier("teams://example.webhook.office.com/webhookb2/abc?sig=zzz"), approval())
    payload = json.loads(route.calls.last.request.content)
    assert payload["type"] == "message"
    (attachment,) = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    facts = next(b["facts"] for b in card["body"] if b["type"] == "FactSet")
    assert {"title": "Step", "value": "switch"} in facts
    assert {"title": "Run id", "value": "01JRUN"} in facts
    assert any(b.get("text") == "runbook approve 01JRUN --step switch" for b in card["body"])


@respx.mock
def test_webhook_signs_the_raw_body_and_strips_the_secret():
    route = respx.post("https://hooks.example.com/rb?team=ops").mock(
        return_value=httpx.Response(204)
    )
    notifier = WebhookNotifier(
        "webhook+https://hooks.example.com/rb?secret=topsecret&team=ops",
        clock=lambda: 1_700_000_000,
    )
    send(notifier, failed_step())
    request = route.calls.last.request
    assert "topsecret" not in str(request.url)
    body = request.content
    assert request.headers["X-Runbook-Signature"] == sign("topsecret", body)
    assert request.headers["X-Runbook-Timestamp"] == "1700000000"
    assert verify_signature(
        "topsecret", body, request.headers["X-Runbook-Signature"], "1700000000", now=1_700_000_100
    )
    assert not verify_signature(
        "topsecret", body, request.headers["X-Runbook-Signature"], "1700000000", now=1_700_009_999
    )  # a replay, later
    assert not verify_signature("topsecret", body + b" ", request.headers["X-Runbook-Signature"])
    payload = json.loads(body)
    assert payload["sent_at"] == 1_700_000_000 and payload["version"] == 1
    assert payload["message"]["data"]["event"]["kind"] == "step_failed"


@respx.mock
def test_webhook_secret_from_option_and_env(monkeypatch):
    route = respx.post("http://127.0.0.1:9/rb").mock(return_value=httpx.Response(200))
    monkeypatch.setenv("RB_HOOK_SECRET", "from-env")
    send(WebhookNotifier("webhook+http://127.0.0.1:9/rb", secret_env="RB_HOOK_SECRET"), approval())
    assert route.calls.last.request.headers["X-Runbook-Signature"] == sign(
        "from-env", route.calls.last.request.content
    )
    send(WebhookNotifier("webhook+http://127.0.0.1:9/rb", secret="opt"), approval())
    assert route.calls.last.request.headers["X-Runbook-Signature"] == sign(
        "opt", route.calls.last.request.content
    )
    send(WebhookNotifier("webhook+http://127.0.0.1:9/rb"), approval())
    assert "X-Runbook-Signature" not in route.calls.last.request.headers


@pytest.mark.parametrize("notifier", [SlackNotifier, TeamsNotifier, WebhookNotifier])
@pytest.mark.parametrize(
    ("rest", "problem"),
    [
        ("127.0.0.1:99999/services/T/B/X", "the port must be from 1 to 65535"),
        ("hooks.example.com:notaport/x", "the port is not a number"),
        ("[::1/x", "an IPv6 host needs both its brackets"),
    ],
)
def test_a_malformed_host_or_port_is_a_config_error(notifier, rest: str, problem: str):
    """Refused when the notifier is made, before a send: httpx raised an ExceptionGroup
    ("unhandled errors in a TaskGroup") for a port out of range, or ValueError."""
    scheme = {SlackNotifier: "slack", TeamsNotifier: "teams"}.get(notifier, "webhook+https")
    with pytest.raises(ConfigError) as info:
        notifier(f"{scheme}://{rest}")
    assert str(info.value).startswith(f"notify: {scheme}://***: {problem}")


def test_webhook_config_errors(monkeypatch):
    monkeypatch.delenv("RB_UNSET", raising=False)
    with pytest.raises(ConfigError, match="RB_UNSET"):
        WebhookNotifier("webhook+https://h.example/x?secret_env=RB_UNSET")
    with pytest.raises(ConfigError, match="webhook"):
        WebhookNotifier("webhook+ftp://h.example/x")
    with pytest.raises(ConfigError, match="host and a path"):
        SlackNotifier("slack://")


@respx.mock
def test_4xx_is_permanent_and_5xx_429_timeouts_are_transient():
    route = respx.post(SLACK_HTTPS)
    notifier = SlackNotifier(SLACK)
    route.mock(return_value=httpx.Response(404, text="no_service"))
    with pytest.raises(NotificationError, match="HTTP 404: no_service") as info:
        send(notifier, approval())
    assert TOKEN not in str(info.value)
    route.mock(return_value=httpx.Response(429, headers={"Retry-After": "12"}))
    with pytest.raises(TransientNotificationError) as transient:
        send(notifier, approval())
    assert transient.value.retry_after == 12.0
    route.mock(return_value=httpx.Response(502))
    with pytest.raises(TransientNotificationError, match="HTTP 502"):
        send(notifier, approval())
    route.mock(side_effect=httpx.ReadTimeout(f"timed out {SLACK_HTTPS}"))
    with pytest.raises(TransientNotificationError, match="no answer") as timeout:
        send(notifier, approval())
    route.mock(side_effect=httpx.ConnectError(f"cannot connect {SLACK_HTTPS}"))
    with pytest.raises(TransientNotificationError, match="connection failed") as refused:
        send(notifier, approval())
    assert TOKEN not in str(timeout.value) + str(refused.value)


def test_retry_after_parses_seconds_and_dates():
    assert retry_after("3") == 3.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after(formatdate(1_000_030, usegmt=True), now=1_000_000) == pytest.approx(30)
    assert retry_after(formatdate(999_000, usegmt=True), now=1_000_000) == 0.0


def _service(rules, **kw):
    failures: list[tuple[str, str]] = []
    sleeps = Sleeps()
    svc = NotificationService(
        Plugins(), rules, sleep=sleeps, on_failure=lambda m, u, e: failures.append((u, e)), **kw
    )
    return svc, failures, sleeps


def _run(svc, message: Message) -> None:
    async def main() -> None:
        async with svc:
            svc.adhoc(message)
            await svc.flush(10)

    asyncio.run(main())


@respx.mock
def test_dispatcher_retries_429_with_retry_after_then_500_then_succeeds():
    route = respx.post(SLACK_HTTPS).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(500),
            httpx.Response(200, text="ok"),
        ]
    )
    svc, failures, sleeps = _service([{"to": SLACK}], backoff=0.5)
    _run(svc, Message(title="hello", env="prod"))
    assert route.call_count == 3
    assert failures == []
    assert sleeps.delays[0] == pytest.approx(7.0)
    assert 0.5 <= sleeps.delays[1] <= 1.0


@respx.mock
def test_dispatcher_gives_up_after_the_limit_without_leaking_the_token():
    route = respx.post(SLACK_HTTPS).mock(
        return_value=httpx.Response(503, text=f"upstream {SLACK_HTTPS} unavailable")
    )
    svc, failures, sleeps = _service([{"to": SLACK}], retries=3)
    _run(svc, Message(title="hello", env="prod"))
    assert route.call_count == 4
    assert len(sleeps.delays) == 3
    ((shown, error),) = failures
    assert shown == "slack://hooks.slack.com/***"
    assert "gave up after 4 attempt(s)" in error and "HTTP 503" in error
    assert TOKEN not in error


@respx.mock
def test_dispatcher_does_not_retry_a_4xx():
    route = respx.post(SLACK_HTTPS).mock(return_value=httpx.Response(403, text="invalid_token"))
    svc, failures, sleeps = _service([{"to": SLACK}])
    _run(svc, Message(title="hello", env="prod"))
    assert route.call_count == 1 and sleeps.delays == []
    assert failures == [
        ("slack://hooks.slack.com/***", "Slack at hooks.slack.com answered HTTP 403: invalid_token")
    ]
