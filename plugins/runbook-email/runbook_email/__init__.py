"""runbook-email: the ``smtp://`` notifier for runbook (standard library smtplib, no dependency).

``pip install runbook-email`` registers the scheme through the ``runbook`` entry point group.
"""

from __future__ import annotations

from typing import Any

from runbook.hookspecs import Provider, hookimpl
from runbook_email.smtp import SmtpNotifier, render_email

__version__ = "0.2.0"


def _smtp(url: str, **options: Any) -> SmtpNotifier:
    return SmtpNotifier(url, **options)


@hookimpl
def runbook_notifiers() -> list[Provider]:
    return [Provider("smtp", _smtp, "email through an SMTP relay (STARTTLS, login)")]


__all__ = ["SmtpNotifier", "render_email", "runbook_notifiers"]
