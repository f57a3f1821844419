"""runbook-slack: Slack, Microsoft Teams and signed-webhook notifiers for runbook.

``pip install runbook-slack`` registers the ``slack://``, ``teams://``, ``webhook+https://`` and
``webhook+http://`` notifier schemes through the ``runbook`` entry point group.
"""

from __future__ import annotations

from typing import Any

from runbook.hookspecs import Provider, hookimpl
from runbook_slack.slack import SlackNotifier, blocks_payload
from runbook_slack.teams import TeamsNotifier, card_payload
from runbook_slack.webhook import WebhookNotifier, sign, verify_signature

__version__ = "0.2.0"


def _slack(url: str, **options: Any) -> SlackNotifier:
    return SlackNotifier(url, **options)


def _teams(url: str, **options: Any) -> TeamsNotifier:
    return TeamsNotifier(url, **options)


def _webhook(url: str, **options: Any) -> WebhookNotifier:
    return WebhookNotifier(url, **options)


@hookimpl
def runbook_notifiers() -> list[Provider]:
    return [
        Provider("slack", _slack, "Slack incoming webhook (Block Kit)"),
        Provider("teams", _teams, "Microsoft Teams webhook (Adaptive Card)"),
        Provider("webhook+https", _webhook, "JSON POST, HMAC-SHA256 signed with a secret"),
        Provider("webhook+http", _webhook, "JSON POST over plain http (local receivers)"),
    ]


__all__ = [
    "SlackNotifier",
    "TeamsNotifier",
    "WebhookNotifier",
    "blocks_payload",
    "card_payload",
    "runbook_notifiers",
    "sign",
    "verify_signature",
]
