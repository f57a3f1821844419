"""runbook-email against a real aiosmtpd server on 127.0.0.1: delivery, login, STARTTLS, errors."""

from __future__ import annotations

import asyncio
import email
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from email.message import Message as MailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from runbook_email import SmtpNotifier

from runbook.errors import ConfigError, NotificationError
from runbook.notify import Message, TransientNotificationError
from runbook.notify.dispatch import NotificationService
from runbook.plugins import Plugins

PASSWORD = "hunter2-smtp-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """aiosmtpd handler: keeps every message and who logged in."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], MailMessage]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                email.message_from_bytes(envelope.original_content),
            )
        )
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == PASSWORD.encode()
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)


def start_server(inbox: Inbox, **kwargs: Any) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate, **kwargs
    )
    controller.start()
    return controller, port


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def server(inbox: Inbox) -> Iterator[int]:
    controller, port = start_server(inbox, auth_require_tls=False)
    yield port
    controller.stop()


def self_signed(tmp: Path) -> tuple[Path, Path] | None:
    """A certificate for 127.0.0.1: with ``cryptography`` if installed, else the openssl CLI."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if not shutil.which("openssl"):
            return None
        done = subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return (cert, key) if done.returncode == 0 else None
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def message() -> Message:
    return Message(
        title="deploy failed & rolled back in prod",
        text="Run 01J started by alice.",
        severity="error",
        kind="run_finished",
        run_id="01J",
        runbook="deploy",
        env="prod",
        actor="alice",
        error="AssertionError: <503> != 200",
        command="runbook show 01J",
    )


def send(notifier: SmtpNotifier) -> None:
    async def main() -> None:
        try:
            await notifier.send(message())
        finally:
            await notifier.aclose()

    asyncio.run(main())


def test_delivers_plain_text_and_html(server: int, inbox: Inbox):
    send(
        Plugins().open(
            "notifier",
            f"smtp://127.0.0.1:{server}?to=a@example.com,b@example.com&from=runbook@example.com",
        )
    )
    ((sender, rcpts, mail),) = inbox.mails

    def _decoded(part: MailMessage) -> str:
        payload = part.get_payload(decode=True)  # a leaf part decodes to bytes
        assert isinstance(payload, bytes)
        return payload.decode()

    assert sender == "runbook@example.com"
    assert rcpts == ["a@example.com", "b@example.com"]
    assert mail["Subject"] == "[runbook] ERROR: deploy failed & rolled back in prod"
    assert mail.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): _decoded(p) for p in mail.walk() if not p.is_multipart()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "AssertionError: <503> != 200" in parts["text/plain"]
    assert "runbook show 01J" in parts["text/plain"]
    assert "AssertionError: &lt;503&gt; != 200" in parts["text/html"]
    assert "<h2>deploy failed &amp; rolled back in prod</h2>" in parts["text/html"]
    assert inbox.logins == []


def test_logs_in_when_a_user_is_given(server: int, inbox: Inbox, monkeypatch):
    monkeypatch.setenv("RB_SMTP_PASSWORD", PASSWORD)
    send(
        SmtpNotifier(
            f"smtp://ops%40example.com@127.0.0.1:{server}?to=a@example.com"
            "&password_env=RB_SMTP_PASSWORD"
        )
    )
    assert inbox.logins == ["ops@example.com"]
    assert len(inbox.mails) == 1


def test_wrong_password_is_permanent_and_never_shown(server: int, inbox: Inbox, caplog):
    notifier = SmtpNotifier(
        f"smtp://ops@127.0.0.1:{server}?to=a@example.com&password=wrong-secret-pass"
    )
    assert "prefer password_env" in caplog.text
    with pytest.raises(NotificationError, match="refused the login of 'ops'") as info:
        send(notifier)
    assert not isinstance(info.value, TransientNotificationError)
    assert "wrong-secret-pass" not in str(info.value)
    assert inbox.mails == []


def test_starttls_then_login(tmp_path: Path, inbox: Inbox, monkeypatch):
    pair = self_signed(tmp_path)
    if pair is None:
        pytest.skip("neither cryptography nor the openssl CLI can make a test certificate")
    cert, key = pair
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    controller, port = start_server(inbox, tls_context=server_tls, require_starttls=True)
    monkeypatch.setenv("RB_SMTP_PASSWORD", PASSWORD)
    try:
        send(
            SmtpNotifier(
                f"smtp://ops@127.0.0.1:{port}?to=a@example.com&starttls=1"
                f"&password_env=RB_SMTP_PASSWORD&cafile={cert}"
            )
        )
        # Without trusting the certificate the handshake fails: permanent, no retries.
        with pytest.raises(NotificationError, match="TLS failed"):
            send(SmtpNotifier(f"smtp://127.0.0.1:{port}?to=a@example.com&starttls=1"))
    finally:
        controller.stop()
    assert inbox.logins == ["ops"]
    assert len(inbox.mails) == 1


def test_starttls_refused_by_a_server_without_it(server: int):
    with pytest.raises(NotificationError, match="does not support STARTTLS"):
        send(SmtpNotifier(f"smtp://127.0.0.1:{server}?to=a@example.com&starttls=1"))


def test_connection_refused_goes_the_failure_path(monkeypatch):
    monkeypatch.setenv("RB_SMTP_PASSWORD", PASSWORD)
    url = f"smtp://ops@127.0.0.1:{free_port()}?to=a@example.com&password_env=RB_SMTP_PASSWORD"
    with pytest.raises(TransientNotificationError, match="ConnectionRefusedError"):
        send(SmtpNotifier(url))

    failures: list[tuple[str, str]] = []
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    svc = NotificationService(
        Plugins(),
        [{"to": url}],
        retries=2,
        sleep=sleep,
        on_failure=lambda m, u, e: failures.append((u, e)),
    )

    async def main() -> None:
        async with svc:
            svc.adhoc(message())
            await svc.flush(10)

    asyncio.run(main())
    ((shown, error),) = failures
    assert shown.startswith("smtp://127.0.0.1:")
    assert "gave up after 3 attempt(s)" in error and "ConnectionRefusedError" in error
    assert PASSWORD not in error and "ops" not in shown
    assert len(delays) == 2


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("smtp://127.0.0.1:25", "no recipients"),
        ("smtp://ops@127.0.0.1:25?to=a@b", "needs a password"),
        ("smtp://127.0.0.1:25?to=a@b&password_env=RB_SURELY_UNSET", "RB_SURELY_UNSET"),
        ("smtp://127.0.0.1:25?to=a@b&tls=1", "unknown parameter(s) tls"),
        ("smtp://?to=a@b", "must look like"),
        ("smtp://h:99999?to=a@b", "notify: smtp://***: the port must be from 1 to 65535"),
        ("smtp://[::1?to=a@b", "notify: smtp://***: an IPv6 host needs both its brackets"),
    ],
)
def test_configuration_errors(url: str, needle: str, monkeypatch):
    monkeypatch.delenv("RB_SURELY_UNSET", raising=False)
    with pytest.raises(ConfigError) as info:
        SmtpNotifier(url)
    assert needle in str(info.value)


def test_starttls_defaults_to_port_587():
    assert SmtpNotifier("smtp://mail.example.com?to=a@b&starttls=1").settings.port == 587
    assert SmtpNotifier("smtp://mail.example.com?to=a@b").settings.port == 25
