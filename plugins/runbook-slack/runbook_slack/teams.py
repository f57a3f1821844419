"""``teams://host/path``: a Teams incoming webhook or Workflows URL, Adaptive Card payload.

``teams://prod-12.westeurope.logic.azure.com/workflows/...?sig=...`` posts to the same URL over
https. Path and query carry the credential; errors name the host only.
"""

from __future__ import annotations

from typing import Any

import httpx

from runbook.notify import Message
from runbook_slack._http import DEFAULT_TIMEOUT, HttpPoster
from runbook_slack.payload import dumps
from runbook_slack.slack import https_url

_COLORS = {"info": "Good", "warning": "Warning", "error": "Attention", "critical": "Attention"}


def card_payload(message: Message) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": message.title,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": _COLORS.get(message.severity, "Default"),
        },
    ]
    if message.text:
        body.append({"type": "TextBlock", "text": message.text, "wrap": True})
    facts = [
        ("Runbook", message.runbook),
        ("Env", message.env),
        ("Actor", message.actor),
        ("Step", message.step or ""),
        ("Run id", message.run_id),
        ("Severity", message.severity),
    ]
    body.append(
        {
            "type": "FactSet",
            "facts": [{"title": name, "value": value} for name, value in facts if value],
        }
    )
    if message.error:
        body.append({"type": "TextBlock", "text": "Error", "weight": "Bolder", "wrap": True})
        body.append(
            {
                "type": "TextBlock",
                "text": message.error[:4000],
                "fontType": "Monospace",
                "wrap": True,
            }
        )
    if message.command:
        body.append({"type": "TextBlock", "text": "Command", "weight": "Bolder", "wrap": True})
        body.append(
            {"type": "TextBlock", "text": message.command, "fontType": "Monospace", "wrap": True}
        )
    return {
        "type": "message",
        "summary": message.title,
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                    "msteams": {"width": "Full"},
                },
            }
        ],
    }


class TeamsNotifier:
    def __init__(
        self, url: str, *, timeout: float = 10.0, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url
        self._target = https_url(url, "teams")
        self._http = HttpPoster("Teams", float(timeout or DEFAULT_TIMEOUT), client)

    async def send(self, message: Message) -> None:
        await self._http.post(self._target, dumps(card_payload(message)))

    async def aclose(self) -> None:
        await self._http.aclose()
