"""Notifications: messages built from audit events, routed to channels off the critical path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.notify.base import Message, Notifier, TransientNotificationError

if TYPE_CHECKING:
    from runbook.notify.dispatch import NotificationService


def __getattr__(name: str) -> Any:
    # The delivery service brings asyncio and the threads: imported when a run first asks for
    # it, not when the configuration checks its rules (``runbook list``) or a notifier plugin
    # imports ``Message``.
    if name == "NotificationService":
        from runbook.notify.dispatch import NotificationService

        return NotificationService
    raise AttributeError(f"module 'runbook.notify' has no attribute {name!r}")


__all__ = ["Message", "NotificationService", "Notifier", "TransientNotificationError"]
