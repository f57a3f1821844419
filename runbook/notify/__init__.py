"""Notifications: messages built from audit events, routed to channels off the critical path."""

from runbook.notify.base import Message, Notifier, TransientNotificationError
from runbook.notify.dispatch import NotificationService

__all__ = ["Message", "NotificationService", "Notifier", "TransientNotificationError"]
