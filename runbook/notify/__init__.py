"""Notifications: messages built from audit events, routed to channels off the critical path."""

from runbook.notify.base import Message, Notifier, TransientNotificationError

__all__ = ["Message", "Notifier", "TransientNotificationError"]
