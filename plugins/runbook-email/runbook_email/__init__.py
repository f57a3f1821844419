"""runbook-email: the ``smtp://`` notifier for runbook (standard library smtplib, no dependency).

``pip install runbook-email`` registers the scheme through the ``runbook`` entry point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.hookspecs import Provider, hookimpl

if TYPE_CHECKING:
    from runbook_email.smtp import SmtpNotifier, render_email

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    # Imported when first used: every ``runbook`` command loads this package through its entry
    # point, and smtplib brings ssl and the email package with it.
    if name in ("SmtpNotifier", "render_email"):
        from runbook_email import smtp

        return getattr(smtp, name)
    raise AttributeError(f"module 'runbook_email' has no attribute {name!r}")


def _smtp(url: str, **options: Any) -> SmtpNotifier:
    from runbook_email.smtp import SmtpNotifier

    return SmtpNotifier(url, **options)


@hookimpl
def runbook_notifiers() -> list[Provider]:
    return [Provider("smtp", _smtp, "email through an SMTP relay (STARTTLS, login)")]


__all__ = ["SmtpNotifier", "render_email", "runbook_notifiers"]
