"""Routing rules: which channels hear about which messages.

One rule per ``notify`` entry in the configuration::

    [[tool.runbook.notify]]
    to = "slack://hooks.slack.com/services/T000/B000/XXXX"
    on = ["run_failed", "approval_requested"]
    env = ["prod"]

    [[tool.runbook.notify]]
    to = "smtp://ops@mail.internal:587?to=oncall@example.com&starttls=1&password_env=SMTP_PW"
    severity = "critical"

    [[tool.runbook.notify]]
    to = "webhook+https://hooks.example.com/runbook"
    on = ["*"]
    options = { secret_env = "HOOK_SECRET" }

A message goes to a rule's channel when its kind (or an alias such as ``run_failed``) is in ``on``,
its env in ``env`` and its severity at least ``severity``. ``on`` defaults to ``DEFAULT_KINDS`` plus
ad-hoc messages; ``env`` defaults to every env; ``severity`` to ``info``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runbook.audit.events import KINDS
from runbook.errors import ConfigError
from runbook.notify.base import SEVERITIES, Message
from runbook.notify.templates import ADHOC, ALIASES, ANY, DEFAULT_KINDS, NEVER_NOTIFIED, tags
from runbook.urls import redact_url

RULE_KEYS = frozenset({"to", "on", "env", "severity", "options"})
# A rule without ``on``: the default kinds, and whatever a step sends through ``notify``.
DEFAULT_ON: frozenset[str] = DEFAULT_KINDS | {ADHOC}
# What runbook notifies when the configuration has no ``notify`` at all.
DEFAULT_RULES: tuple[Mapping[str, Any], ...] = ({"to": "console://"},)
_RANK = {name: i for i, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Rule:
    to: str
    on: frozenset[str] = DEFAULT_ON
    env: frozenset[str] | None = None  # None: every env
    severity: str = "info"
    options: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, message: Message) -> bool:
        if message.kind in NEVER_NOTIFIED:
            return False
        if ANY not in self.on and not (tags(message) & self.on):
            return False
        if self.env is not None and message.env not in self.env:
            return False
        return _RANK.get(message.severity, 0) >= _RANK[self.severity]


def _strings(where: str, key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings, got {value!r}")
    return list(value)


def parse_rule(raw: Mapping[str, Any], index: int = 0) -> Rule:
    """One configuration entry, validated; errors name the entry and, redacted, its channel."""
    where = f"notify[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f'{where} must be a table like {{ to = "slack://..." }}, got {type(raw).__name__}'
        )
    to = raw.get("to")
    if isinstance(to, str) and "://" in to:
        where = f"{where} ({redact_url(to)})"
    unknown = set(raw) - RULE_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"expected {', '.join(sorted(RULE_KEYS))}"
        )
    if not isinstance(to, str) or "://" not in to:
        raise ConfigError(
            f"{where}: 'to' is required and must be a channel URL such as "
            "slack://hooks.slack.com/services/... or console://"
        )
    on = DEFAULT_ON
    if "on" in raw:
        names = _strings(where, "on", raw["on"])
        known = set(KINDS) | set(ALIASES) | {ADHOC, ANY}
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigError(
                f"{where}: unknown event kind(s) in 'on': {', '.join(bad)}; use event kinds "
                f"({', '.join(sorted(DEFAULT_KINDS))}, ...), {', '.join(sorted(ALIASES))}, "
                f"{ADHOC!r} or {ANY!r}"
            )
        if not names:
            raise ConfigError(
                f"{where}: 'on' is empty, so the rule would never notify; "
                "remove the rule or list event kinds"
            )
        on = frozenset(names)
    env = frozenset(_strings(where, "env", raw["env"])) if "env" in raw else None
    severity = raw.get("severity", "info")
    if severity not in SEVERITIES:
        raise ConfigError(
            f"{where}: severity must be one of {', '.join(SEVERITIES)} "
            f"(the minimum to notify), got {severity!r}"
        )
    options = raw.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: options must be a table, got {type(options).__name__}")
    return Rule(to=to, on=on, env=env, severity=severity, options=dict(options))


class Rules:
    """All rules; ``route`` answers the channels for one message, each once, in rule order."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        seen: dict[str, Mapping[str, Any]] = {}
        for rule in self.rules:
            if rule.to in seen and seen[rule.to] != rule.options:
                # A channel is opened once per URL; two sets of options for it is ambiguous.
                raise ConfigError(
                    f"notify: channel {redact_url(rule.to)} appears in several "
                    "rules with different options"
                )
            seen[rule.to] = rule.options

    @classmethod
    def parse(cls, raw: Iterable[Mapping[str, Any] | Rule] | Rules | None) -> Rules:
        if isinstance(raw, Rules):
            return raw
        if raw is None:
            return cls(())
        if isinstance(raw, Mapping | str):
            raise ConfigError('notify must be a list of rules like [{ to = "slack://..." }]')
        return cls(r if isinstance(r, Rule) else parse_rule(r, i) for i, r in enumerate(raw))

    def route(self, message: Message) -> list[str]:
        urls: list[str] = []
        for rule in self.rules:
            if rule.to not in urls and rule.matches(message):
                urls.append(rule.to)
        return urls

    def options(self, url: str) -> Mapping[str, Any]:
        for rule in self.rules:
            if rule.to == url:
                return rule.options
        return {}

    def __len__(self) -> int:
        return len(self.rules)
