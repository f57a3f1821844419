"""``temporal://HOST:PORT?namespace=default&queue=runbook&heartbeat=10``: where the runs go.

``namespace`` (default ``default``) and ``queue`` (the default task queue, ``runbook``: it runs
the workflows and every step without its own ``queue=``) name Temporal things; ``heartbeat`` is
how many seconds a step's worker may stay silent before it counts as dead (default 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from runbook.errors import UsageError
from runbook.urls import parse_url, redact_url

DEFAULT_PORT = 7233
_KNOWN = frozenset({"namespace", "queue", "heartbeat"})


@dataclass(frozen=True)
class TemporalURL:
    address: str
    namespace: str = "default"
    queue: str = "runbook"
    heartbeat: float = 10.0

    @classmethod
    def parse(cls, url: str) -> TemporalURL:
        parsed = parse_url(url, "executor")
        parts, host, port = parsed.parts, parsed.host, parsed.port or DEFAULT_PORT
        if parts.scheme != "temporal":
            raise UsageError(f"not a temporal:// executor URL: {redact_url(url)}")
        if parts.username or parts.password:
            raise UsageError("temporal:// URLs take no credentials (configure TLS on the worker)")
        if not host:
            raise UsageError(f"temporal:// URL without a host: {redact_url(url)}")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = sorted(set(query) - _KNOWN)
        if unknown:
            raise UsageError(
                f"temporal:// URL: unknown option(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_KNOWN))})"
            )
        try:
            heartbeat = float(query.get("heartbeat", "10"))
        except ValueError:
            raise UsageError(
                f"temporal:// URL: heartbeat must be seconds, got {query['heartbeat']!r}"
            ) from None
        if heartbeat <= 0:
            raise UsageError("temporal:// URL: heartbeat must be > 0 seconds")
        namespace = query.get("namespace") or "default"
        queue = query.get("queue") or "runbook"
        host = f"[{host}]" if ":" in host else host
        return cls(f"{host}:{port}", namespace, queue, heartbeat)

    def __str__(self) -> str:
        return (
            f"temporal://{self.address}?namespace={self.namespace}&queue={self.queue}"
            f"&heartbeat={self.heartbeat:g}"
        )
