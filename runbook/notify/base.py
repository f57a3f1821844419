"""The notifier contract: a ``Message`` built from an audit event, and channels that deliver it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

SEVERITIES = ("info", "warning", "error", "critical")


@dataclass(frozen=True)
class Message:
    """Everything a person needs to act: what, where, who, which step, the error, the command.

    Built from already-redacted audit data, so a notifier never sees a secret.
    """

    title: str
    text: str = ""
    severity: str = "info"
    kind: str = ""  # the audit event kind, or "adhoc" for ctx/notify resource messages
    run_id: str = ""
    runbook: str = ""
    env: str = ""
    actor: str = ""
    step: str | None = None
    error: str | None = None
    command: str | None = None  # e.g. "runbook approve 01J... --step switch"
    link: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TransientNotificationError(Exception):
    """A delivery failure worth retrying (timeout, 5xx, 429); ``retry_after`` honours the server."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@runtime_checkable
class Notifier(Protocol):
    """Opened from a URL by a plugin (``runbook_notifiers`` hook).

    ``send`` raises ``TransientNotificationError`` for failures worth retrying and any other
    exception for permanent ones; the dispatcher owns retries, backoff and the deadline.
    """

    url: str

    async def send(self, message: Message) -> None: ...

    async def aclose(self) -> None: ...
