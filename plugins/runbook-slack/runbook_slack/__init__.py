"""runbook-slack: Slack, Microsoft Teams and signed-webhook notifiers for runbook.

``pip install runbook-slack`` registers the ``slack://``, ``teams://``, ``webhook+https://`` and
``webhook+http://`` notifier schemes through the ``runbook`` entry point group.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runbook.hookspecs import Provider, hookimpl

if TYPE_CHECKING:
    from runbook_slack.slack import SlackNotifier, blocks_payload
    from runbook_slack.teams import TeamsNotifier, card_payload
    from runbook_slack.webhook import WebhookNotifier, sign, verify_signature

__version__ = "0.2.0"

# Imported when first used: every ``runbook`` command loads this package through its entry
# point, and the notifiers need httpx, which costs more than the rest of ``runbook --help``.
_LAZY = {
    "SlackNotifier": "runbook_slack.slack",
    "blocks_payload": "runbook_slack.slack",
    "TeamsNotifier": "runbook_slack.teams",
    "card_payload": "runbook_slack.teams",
    "WebhookNotifier": "runbook_slack.webhook",
    "sign": "runbook_slack.webhook",
    "verify_signature": "runbook_slack.webhook",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runbook_slack' has no attribute {name!r}")


def _slack(url: str, **options: Any) -> SlackNotifier:
    from runbook_slack.slack import SlackNotifier

    return SlackNotifier(url, **options)


def _teams(url: str, **options: Any) -> TeamsNotifier:
    from runbook_slack.teams import TeamsNotifier

    return TeamsNotifier(url, **options)


def _webhook(url: str, **options: Any) -> WebhookNotifier:
    from runbook_slack.webhook import WebhookNotifier

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
