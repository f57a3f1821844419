"""``slack://hooks.slack.com/services/T/B/X``: a Slack incoming webhook, Block Kit payload.

The URL after ``slack://`` is the webhook's own (``https://`` is implied); its path is the token,
so it never appears in errors or logs. The payload has a header, the context as fields, the error
and the command to run in code blocks, and a plain ``text`` fallback for notifications and clients
that do not render blocks.
"""

from __future__ import annotations

from typing import Any

import httpx

from runbook.errors import ConfigError
from runbook.notify import Message
from runbook.urls import parse_url
from runbook_slack._http import DEFAULT_TIMEOUT, HttpPoster
from runbook_slack.payload import dumps

_HEADER_MAX = 150  # Slack's limits: header text 150 characters, section text 3000
_SECTION_MAX = 3000
_ICONS = {
    "info": ":white_check_mark:",
    "warning": ":warning:",
    "error": ":x:",
    "critical": ":rotating_light:",
}


def https_url(url: str, scheme: str) -> str:
    """The webhook's ``https://`` URL; a malformed host or port is a ``ConfigError`` now, not
    an error from the HTTP client at the first send."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    parse_url(url, "notify")
    if not rest.split("/", 1)[0] or "/" not in rest:
        raise ConfigError(
            f"{scheme}:// URL needs a host and a path, like {scheme}://hooks.example.com/path"
        )
    return "https://" + rest


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str, limit: int) -> str:
    body = _escape(text).replace("```", "'''")
    if len(body) > limit:
        body = body[: limit - 20] + "\n... (truncated)"
    return f"```{body}```"


def _fallback(message: Message) -> str:
    parts = [f"[{message.severity.upper()}] {message.title}"]
    if message.error:
        parts.append(
            f"error: {message.error.strip().splitlines()[0] if message.error.strip() else ''}"
        )
    if message.command:
        parts.append(f"run: {message.command}")
    return " | ".join(parts)


def blocks_payload(message: Message) -> dict[str, Any]:
    title = message.title
    if len(title) > _HEADER_MAX:
        title = title[: _HEADER_MAX - 1] + "…"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
    ]
    if message.text:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"{_ICONS.get(message.severity, '')} {_escape(message.text)}".strip()[
                        :_SECTION_MAX
                    ],
                },
            }
        )
    facts = [
        ("Runbook", message.runbook),
        ("Env", message.env),
        ("Actor", message.actor),
        ("Step", message.step or ""),
        ("Run id", message.run_id),
    ]
    fields = [
        {"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"} for name, value in facts if value
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    if message.error:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Error*\n" + _code(message.error, _SECTION_MAX - 20),
                },
            }
        )
    if message.command:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Command*\n" + _code(message.command, _SECTION_MAX - 20),
                },
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"severity *{message.severity}* · {message.kind or 'adhoc'}",
                }
            ],
        }
    )
    return {"text": _fallback(message), "blocks": blocks}


class SlackNotifier:
    def __init__(
        self, url: str, *, timeout: float = DEFAULT_TIMEOUT, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url
        self._target = https_url(url, "slack")
        self._http = HttpPoster("Slack", float(timeout), client)

    async def send(self, message: Message) -> None:
        await self._http.post(self._target, dumps(blocks_payload(message)))

    async def aclose(self) -> None:
        await self._http.aclose()
