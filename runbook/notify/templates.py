"""From an audit event to a ``Message`` a person can act on: what happened, where, who, what to run.

Every kind has a default title and text written with the same ``str.format`` placeholders a user's
override may use, so ``[tool.runbook.templates]`` can replace any of them::

    [tool.runbook.templates]
    run_failed = { title = ":rotating_light: {runbook} {status} in {env}" }
    approval_requested = "{actor} needs an approval for {step}: {command}"   # a string = title

Keys are event kinds or the aliases in ``ALIASES`` (``run_failed``...), an alias winning over its
kind. Placeholders are checked when the templates are loaded: a typo is a ``ConfigError`` naming the
kind, not a ``KeyError`` in the middle of a failing run.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any

from runbook.audit.events import KINDS, AuditEvent
from runbook.context import RunInfo
from runbook.errors import ConfigError
from runbook.notify.base import Message

ADHOC = "adhoc"  # Message.kind of messages sent by a step through the ``notify`` resource

# Kinds a routing rule without ``on`` notifies: the ones where a person has to look or act.
# ``run_finished`` covers every end (succeeded too: people want to know the deploy is done).
DEFAULT_KINDS: frozenset[str] = frozenset(
    {
        "approval_requested",
        "run_finished",
        "rollback_failed",
        "step_failed",
        "run_paused",
        "lock_denied",
    }
)

# Names a rule's ``on`` may use besides the kinds: run_finished narrowed by the run's status.
RUN_FAILED_STATUSES = frozenset({"failed", "rolled_back", "rollback_failed"})
ALIASES: Mapping[str, frozenset[str]] = {
    "run_failed": RUN_FAILED_STATUSES,
    "run_succeeded": frozenset({"succeeded"}),
}
ANY = "*"  # ``on = ["*"]``: every kind, ad-hoc messages included

# Never notified, whatever a rule says: a failed notification notifying would loop.
NEVER_NOTIFIED = frozenset({"notification_failed"})

PLACEHOLDERS = frozenset(
    {
        "run_id",
        "step",
        "env",
        "actor",
        "runbook",
        "error",
        "status",
        "command",
        "kind",
        "host",
        "severity",
    }
)

_RUN_STATUS_WORDS = {
    "succeeded": "succeeded",
    "failed": "failed",
    "rolled_back": "failed and was rolled back",
    "rollback_failed": "failed and its rollback FAILED (manual intervention needed)",
    "cancelled": "was cancelled",
    "paused": "is paused",
}
_RUN_STATUS_SEVERITY = {
    "succeeded": "info",
    "failed": "error",
    "rolled_back": "error",
    "rollback_failed": "critical",
    "cancelled": "warning",
    "paused": "warning",
}
_KIND_SEVERITY = {
    "step_failed": "error",
    "rollback_failed": "critical",
    "approval_requested": "warning",
    "approval_denied": "warning",
    "run_paused": "warning",
    "lock_denied": "warning",
    "run_cancelled": "warning",
    "step_retried": "warning",
}

# Defaults, written exactly as an override would be. ``{status}`` in run_finished titles is the
# human wording of the status ("failed and was rolled back"); ``data.status`` keeps the raw one.
DEFAULT_TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "run_succeeded": {
        "title": "{runbook} succeeded in {env}",
        "text": "Run {run_id} started by {actor} finished.",
    },
    "run_failed": {
        "title": "{runbook} {status} in {env}",
        "text": "Run {run_id} started by {actor} {status}.",
    },
    "run_finished": {
        "title": "{runbook} {status} in {env}",
        "text": "Run {run_id} started by {actor} {status}.",
    },
    "step_failed": {
        "title": "{runbook}: step {step} failed in {env}",
        "text": "Step {step} of run {run_id} ({actor}) failed.",
    },
    "rollback_failed": {
        "title": "{runbook}: rollback of {step} FAILED in {env}",
        "text": "Run {run_id} ({actor}) needs manual intervention: the rollback of {step} failed.",
    },
    "approval_requested": {
        "title": "{runbook}: approval needed for {step} in {env}",
        "text": "Run {run_id} started by {actor} is waiting at {step}.",
    },
    "approval_granted": {
        "title": "{runbook}: {step} approved in {env}",
        "text": "{actor} approved {step} of run {run_id}.",
    },
    "approval_denied": {
        "title": "{runbook}: {step} denied in {env}",
        "text": "{actor} denied {step} of run {run_id}.",
    },
    "run_paused": {
        "title": "{runbook} paused in {env}",
        "text": "Run {run_id} started by {actor} is paused.",
    },
    "run_resumed": {"title": "{runbook} resumed in {env}", "text": "{actor} resumed run {run_id}."},
    "lock_denied": {
        "title": "{runbook} could not take a lock in {env}",
        "text": "Run {run_id} ({actor}) did not start: {error}",
    },
}
_GENERIC = {"title": "{runbook}: {kind} in {env}", "text": "Run {run_id} ({actor}): {kind}."}


def _check(key: str, part: str, template: Any) -> str:
    if not isinstance(template, str):
        raise ConfigError(
            f"notification template {key}.{part} must be a string, not {type(template).__name__}"
        )
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"notification template {key}.{part} is malformed: {exc}") from None
    for name in fields:
        # Attribute and index access ({run_id.__class__}, {step[0]}) are refused with the rest:
        # a template is configuration, never a way to reach into objects.
        if name not in PLACEHOLDERS:
            shown = "{" + name + "}" if name else "{} (positional)"
            raise ConfigError(
                f"notification template {key}.{part} uses unknown placeholder {shown}; "
                f"known: {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}"
            )
    return template


def _run_status(event: AuditEvent) -> str | None:
    status = event.data.get("status") if isinstance(event.data, dict) else None
    return str(status) if status else None


def tags(message: Message) -> frozenset[str]:
    """The names a routing rule's ``on`` may match this message by: its kind and its aliases."""
    names = {message.kind or ADHOC}
    if message.kind == "run_finished":
        status = str(message.data.get("status", ""))
        names.update(alias for alias, statuses in ALIASES.items() if status in statuses)
    return frozenset(names)


@dataclass(frozen=True)
class Templates:
    """Default templates merged with the user's overrides, validated once."""

    templates: Mapping[str, Mapping[str, str]]

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Templates:
        merged = {key: dict(value) for key, value in DEFAULT_TEMPLATES.items()}
        for key, value in (overrides or {}).items():
            if key not in KINDS and key not in ALIASES and key != ADHOC:
                raise ConfigError(
                    f"notification template for unknown event kind {key!r}; "
                    f"use an event kind or one of {', '.join(sorted(ALIASES))}"
                )
            if isinstance(value, str):
                value = {"title": value}
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"notification template {key} must be a string (the title) or "
                    "a table with title and/or text"
                )
            unknown = set(value) - {"title", "text"}
            if unknown:
                raise ConfigError(
                    f"notification template {key} has unknown key(s) "
                    f"{', '.join(sorted(unknown))}; expected title, text"
                )
            merged.setdefault(key, dict(_GENERIC)).update(value)
        for key, value in merged.items():
            for part, template in value.items():
                _check(key, part, template)
        return cls(merged)

    def _lookup(self, keys: list[str], part: str) -> str:
        for key in keys:
            if part in self.templates.get(key, {}):
                return self.templates[key][part]
        return _GENERIC[part]

    def render(self, event: AuditEvent, run: RunInfo) -> Message:
        """The message for ``event`` (already redacted: nothing here adds a secret)."""
        status = _run_status(event)
        keys = [event.kind]
        if event.kind == "run_finished" and status:
            keys[:0] = [a for a, statuses in ALIASES.items() if status in statuses]
        data = event.data if isinstance(event.data, dict) else {}
        error = data.get("error")
        error_text = str(error) if error not in (None, "") else None
        command = _command(event, run, status)
        severity = _severity(event, status)
        name = run.name or PurePath(run.runbook).stem or str(event.runbook.get("path", ""))
        values = {
            "run_id": event.run_id or run.run_id,
            "step": event.step or "",
            "env": event.env or run.env,
            "actor": event.actor or run.actor,
            "runbook": name,
            "error": error_text or "",
            "status": _RUN_STATUS_WORDS.get(status or "", status or ""),
            "command": command or "",
            "kind": event.kind,
            "host": event.host,
            "severity": severity,
        }
        title = self._lookup(keys, "title").format(**values).strip()
        text = self._lookup(keys, "text").format(**values).strip()
        return Message(
            title=title,
            text=text,
            severity=severity,
            kind=event.kind,
            run_id=values["run_id"],
            runbook=name,
            env=values["env"],
            actor=values["actor"],
            step=event.step,
            error=error_text,
            command=command,
            data={"status": status, "event": event.to_dict()}
            if status
            else {"event": event.to_dict()},
        )

    def render_adhoc(self, message: Message, run: RunInfo | None = None) -> Message:
        """Ad-hoc messages keep their own words; the run fills what the step left out.

        Filling ``env`` matters: routing rules filter on it, so a message without one would
        never reach an ``env = ["prod"]`` channel.
        """
        fill: dict[str, Any] = {} if message.kind else {"kind": ADHOC}
        if run is not None:
            for name, value in (
                ("run_id", run.run_id),
                ("runbook", run.name),
                ("env", run.env),
                ("actor", run.actor),
            ):
                if not getattr(message, name):
                    fill[name] = value
        return replace(message, **fill) if fill else message


def _severity(event: AuditEvent, status: str | None) -> str:
    if event.kind == "run_finished":
        return _RUN_STATUS_SEVERITY.get(status or "", "info")
    return _KIND_SEVERITY.get(event.kind, "info")


def _command(event: AuditEvent, run: RunInfo, status: str | None) -> str | None:
    """The one command that moves things forward, when there is one."""
    run_id = event.run_id or run.run_id
    if event.kind == "approval_requested":
        return f"runbook approve {run_id}" + (f" --step {event.step}" if event.step else "")
    if event.kind == "run_paused" or (event.kind == "run_finished" and status == "paused"):
        return f"runbook resume {run_id}"
    if event.kind == "rollback_failed" or status == "rollback_failed":
        return f"runbook show {run_id}"
    if event.kind == "lock_denied":
        return "runbook locks"
    if (
        event.kind in ("run_finished", "step_failed")
        and status != "succeeded"
        and (status in RUN_FAILED_STATUSES or event.kind == "step_failed")
    ):
        return f"runbook show {run_id}"
    return None


def build_message(
    event: AuditEvent, run: RunInfo, templates: Templates | Mapping[str, Any] | None = None
) -> Message:
    """One-off rendering with the default templates (or ``templates``)."""
    if not isinstance(templates, Templates):
        templates = Templates.load(templates)
    return templates.render(event, run)
