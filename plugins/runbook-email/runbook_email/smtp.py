"""``smtp://user@host:port?to=a@b,c@d&from=x@y&starttls=1&password_env=VAR``.

smtplib blocks, so each message is sent from a worker thread (``asyncio.to_thread``): the run's
event loop never waits on a mail server. One connection per message: notifications are rare, and
a long-lived SMTP session would time out between them anyway.

URL parameters (each may also be given as a rule option, which wins):

- ``to`` (required): comma-separated recipients; ``from``: sender (default ``runbook@<hostname>``)
- ``starttls=1``: upgrade the connection before login (port then defaults to 587, else 25)
- user in the URL: log in as that user; password from ``password_env=VAR`` (preferred) or
  ``password=`` (discouraged: it then lives in the configuration file and is warned about)
- ``timeout`` (seconds, default 10), ``cafile`` (a CA bundle to verify the server with)

Failures worth retrying (connection refused or dropped, timeouts, SMTP 4xx) are
``TransientNotificationError``; authentication, TLS and SMTP 5xx failures are permanent. Error
text never contains the password.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qsl, unquote

from runbook import urls
from runbook.errors import ConfigError, NotificationError
from runbook.notify import Message, TransientNotificationError
from runbook.redact import Redactor

log = logging.getLogger("runbook.notify.smtp")

_TRUE = {"1", "true", "yes", "on"}
_KNOWN = {"to", "from", "starttls", "password", "password_env", "timeout", "cafile"}


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    to: tuple[str, ...]
    sender: str
    user: str | None
    password: str | None
    starttls: bool
    timeout: float
    cafile: str | None


def parse_url(url: str, options: dict[str, Any]) -> SmtpSettings:
    parsed = urls.parse_url(url, "notify")
    parts = parsed.parts
    if parts.scheme != "smtp" or not parts.hostname:
        raise ConfigError("email notifier URL must look like smtp://[user@]host[:port]?to=a@b")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = (set(query) | set(options)) - _KNOWN - {"ssl_context"}
    if unknown:
        raise ConfigError(
            f"smtp://{parts.hostname}: unknown parameter(s) "
            f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(_KNOWN))}"
        )
    merged = {**query, **{k: v for k, v in options.items() if v is not None}}
    to = merged.get("to")
    recipients = tuple(
        a.strip() for a in (to.split(",") if isinstance(to, str) else to or ()) if a.strip()
    )
    if not recipients:
        raise ConfigError(f"smtp://{parts.hostname}: no recipients; add ?to=oncall@example.com")
    starttls = str(merged.get("starttls", "")).lower() in _TRUE
    user = unquote(parts.username) if parts.username else None
    password = merged.get("password") or (unquote(parts.password) if parts.password else None)
    if "password" in query or parts.password:
        log.warning(
            "smtp://%s: the URL carries a password; prefer password_env=VAR so the "
            "secret stays out of configuration files",
            parts.hostname,
        )
    env_name = merged.get("password_env")
    if not password and env_name:
        password = os.environ.get(str(env_name))
        if not password:
            raise ConfigError(
                f"smtp://{parts.hostname}: environment variable {env_name} "
                "(password_env) is not set"
            )
    if user and not password:
        raise ConfigError(
            f"smtp://{parts.hostname}: user {user!r} needs a password; set password_env=VAR"
        )
    port = parsed.port or (587 if starttls else 25)
    try:
        timeout = float(merged.get("timeout", 10.0))
    except ValueError as exc:
        raise ConfigError(f"smtp://{parts.hostname}: {exc}") from None
    sender = str(merged.get("from") or f"runbook@{socket.gethostname()}")
    return SmtpSettings(
        parts.hostname,
        port,
        recipients,
        sender,
        user,
        password,
        starttls,
        timeout,
        merged.get("cafile"),
    )


def render_email(message: Message, sender: str, to: tuple[str, ...]) -> EmailMessage:
    """multipart/alternative: plain text for terminals and filters, HTML for mail clients."""
    mail = EmailMessage()
    mail["Subject"] = f"[runbook] {message.severity.upper()}: {message.title}"
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    mail["X-Runbook-Run"] = message.run_id or "-"
    facts = [
        ("Runbook", message.runbook),
        ("Env", message.env),
        ("Actor", message.actor),
        ("Step", message.step or ""),
        ("Run id", message.run_id),
        ("Severity", message.severity),
    ]
    facts = [(k, v) for k, v in facts if v]
    lines = [message.title, "", *([message.text, ""] if message.text else [])]
    lines += [f"{k + ':':<10} {v}" for k, v in facts]
    if message.error:
        lines += ["", "Error:", message.error]
    if message.command:
        lines += ["", "Command:", f"    {message.command}"]
    mail.set_content("\n".join(lines) + "\n")
    esc = html.escape
    rows = "".join(f"<tr><th align='left'>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    parts = [f"<h2>{esc(message.title)}</h2>"]
    if message.text:
        parts.append(f"<p>{esc(message.text)}</p>")
    parts.append(f"<table>{rows}</table>")
    if message.error:
        parts.append(f"<h3>Error</h3><pre>{esc(message.error)}</pre>")
    if message.command:
        parts.append(f"<h3>Command</h3><pre><code>{esc(message.command)}</code></pre>")
    mail.add_alternative("<html><body>" + "".join(parts) + "</body></html>", subtype="html")
    return mail


class SmtpNotifier:
    def __init__(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, **options: Any
    ) -> None:
        self.url = url
        self.settings = parse_url(url, options)
        self._ssl_context = ssl_context
        self._redact = Redactor([self.settings.password] if self.settings.password else [])

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context(cafile=self.settings.cafile)
        return self._ssl_context

    def _send_sync(self, mail: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as smtp:
            smtp.ehlo()
            if s.starttls:
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if s.user:
                smtp.login(s.user, s.password or "")
            smtp.send_message(mail, from_addr=s.sender, to_addrs=list(s.to))

    async def send(self, message: Message) -> None:
        mail = render_email(message, self.settings.sender, self.settings.to)
        try:
            await asyncio.to_thread(self._send_sync, mail)
        except Exception as exc:
            raise self._classify(exc) from None

    def _classify(self, exc: Exception) -> Exception:
        """Map smtplib/socket errors to transient or permanent, in words, without secrets."""
        where = f"SMTP {self.settings.host}:{self.settings.port}"
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            what = "STARTTLS" if self.settings.starttls else "the requested extension"
            err: Exception = NotificationError(f"{where} does not support {what}: {exc}")
        elif isinstance(exc, smtplib.SMTPAuthenticationError):
            err = NotificationError(
                f"{where} refused the login of {self.settings.user!r} ({exc.smtp_code})"
            )
        elif isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            text = f"{where} refused recipient(s) {', '.join(exc.recipients)}: {codes}"
            err = (
                TransientNotificationError(text)
                if codes and all(400 <= c < 500 for c in codes)
                else NotificationError(text)
            )
        elif isinstance(exc, smtplib.SMTPResponseException):
            reply = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            text = f"{where} answered {exc.smtp_code}: {reply}"
            err = (
                TransientNotificationError(text)
                if 400 <= exc.smtp_code < 500
                else NotificationError(text)
            )
        elif isinstance(exc, ssl.SSLError | ssl.CertificateError):
            err = NotificationError(f"{where}: TLS failed: {exc}")
        elif isinstance(exc, TimeoutError | socket.timeout):
            err = TransientNotificationError(f"{where}: timed out after {self.settings.timeout:g}s")
        elif isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError | OSError):
            err = TransientNotificationError(f"{where}: {type(exc).__name__}: {exc}")
        else:
            err = NotificationError(f"{where}: {type(exc).__name__}: {exc}")
        err.args = (self._redact.text(str(err)),)
        return err

    async def aclose(self) -> None:
        pass
