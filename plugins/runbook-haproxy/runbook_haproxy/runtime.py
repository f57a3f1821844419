"""HAProxy's runtime API (the "stats socket"): one command per connection, text in, text out.

In non-interactive mode HAProxy reads one line, which may hold several commands separated by
``;``, runs them in order, writes their answers and closes the connection. This module only
moves text and names things safely; what the answers mean is ``runbook_haproxy.router``'s job.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs

from runbook.errors import ConfigError, RunbookError, UsageError
from runbook.urls import parse_url, redact_url

# Backend and server names as HAProxy accepts them; anything else (``;``, spaces, newlines) could
# smuggle a second command into the line, so it is refused before any byte is sent.
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_MAX_ANSWER = 16 * 1024 * 1024


class HAProxyError(RunbookError):
    """HAProxy refused a command, answered something unexpected, or could not be reached."""


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise UsageError(f"HAProxy {what} name must match [A-Za-z0-9_.:-]+, got {value!r}")
    return value


@dataclass(frozen=True)
class Address:
    """Where the runtime API listens: ``(host, port)`` over TCP, or a unix socket path."""

    host: str | None = None
    port: int | None = None
    path: str | None = None
    timeout: float = 5.0

    @classmethod
    def from_url(cls, url: str) -> Address:
        """``url`` checked without connecting: a ``ConfigError`` naming the router setting."""
        parsed = parse_url(url, "router")
        parts = parsed.parts

        def bad(problem: str) -> ConfigError:
            return ConfigError(f"router: {redact_url(url)}: {problem}")

        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"timeout"})
        if unknown:
            raise bad(f"unknown option(s) {', '.join(unknown)}")
        try:
            timeout = float(query.get("timeout", ["5"])[-1])
        except ValueError:
            raise bad("timeout must be seconds") from None
        if timeout <= 0:
            raise bad("timeout must be > 0")
        scheme = parts.scheme.lower()
        if scheme == "haproxy+unix":
            if not parts.path:
                raise bad("has no socket path (haproxy+unix:///PATH)")
            return cls(path=parts.path, timeout=timeout)
        if scheme != "haproxy":
            raise bad("expected haproxy:// or haproxy+unix://")
        if not parsed.host or parsed.port is None:
            raise bad("needs a host and a port (haproxy://HOST:PORT)")
        return cls(host=parsed.host, port=parsed.port, timeout=timeout)

    def __str__(self) -> str:
        return self.path if self.path else f"{self.host}:{self.port}"


class RuntimeAPI:
    """Send command lines to one HAProxy; each call opens and closes its own connection."""

    def __init__(self, address: Address) -> None:
        self.address = address

    def _connect(self) -> socket.socket:
        a = self.address
        try:
            if a.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(a.timeout)
                sock.connect(a.path)
                return sock
            assert a.host is not None and a.port is not None
            return socket.create_connection((a.host, a.port), timeout=a.timeout)
        except OSError as exc:
            raise HAProxyError(f"HAProxy runtime API at {a} unreachable: {exc}") from None

    def execute(self, *commands: str) -> str:
        """Run ``commands`` in one request (in order) and return HAProxy's whole answer."""
        for command in commands:
            if "\n" in command or "\r" in command or ";" in command:
                raise UsageError(f"HAProxy command must be one command, got {command!r}")
        line = "; ".join(commands) + "\n"
        chunks: list[bytes] = []
        size = 0
        with self._connect() as sock:
            try:
                sock.sendall(line.encode("ascii"))
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > _MAX_ANSWER:
                        raise HAProxyError(f"HAProxy at {self.address}: answer too large")
            except OSError as exc:
                raise HAProxyError(
                    f"HAProxy runtime API at {self.address}: {type(exc).__name__}: {exc}"
                ) from None
        return b"".join(chunks).decode("utf-8", "replace")
