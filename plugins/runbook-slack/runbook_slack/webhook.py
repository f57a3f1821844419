"""``webhook+https://host/path`` (or ``webhook+http://``): the message as JSON, optionally signed.

Body: ``{"version": 1, "delivery": ID, "sent_at": UNIX_SECONDS, "message": {...}}`` where
``message`` is ``Message.to_dict()`` (its ``data.event`` is the redacted audit event).

With a secret (``?secret=...`` in the URL, stripped before the request; better, the
``secret_env = "VAR"`` option or ``?secret_env=VAR``) every request carries::

    X-Runbook-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>
    X-Runbook-Timestamp: <sent_at>
    X-Runbook-Delivery: <delivery>

``sent_at`` is inside the signed body, so a receiver that checks it against the header and its
clock rejects replays; ``delivery`` is the same for every retry of one message, so a receiver can
deduplicate (delivery is at least once). ``verify_signature`` is the receiver side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlunsplit

import httpx

from runbook.errors import ConfigError
from runbook.notify import Message
from runbook.urls import parse_url
from runbook_slack._http import DEFAULT_TIMEOUT, HttpPoster
from runbook_slack.payload import dumps

SIGNATURE_HEADER = "X-Runbook-Signature"
TIMESTAMP_HEADER = "X-Runbook-Timestamp"
DELIVERY_HEADER = "X-Runbook-Delivery"
_SECRET_KEYS = ("secret", "secret_env")


def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    body: bytes,
    signature: str | None,
    timestamp: str | None = None,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is ours for ``body`` and, given ``timestamp``, the body is fresh."""
    if not signature or not hmac.compare_digest(sign(secret, body), signature):
        return False
    if timestamp is None:
        return True
    try:
        sent_at = json.loads(body).get("sent_at")
        fresh = abs((time.time() if now is None else now) - float(timestamp)) <= tolerance
    except (ValueError, AttributeError, TypeError):
        return False
    return str(sent_at) == timestamp and fresh


def split_secret(url: str, options: Mapping[str, Any]) -> tuple[str, str | None]:
    """The request URL (``https://...`` without secret parameters) and the signing secret."""
    scheme, _, rest = url.partition("://")
    inner = scheme.split("+", 1)[1] if "+" in scheme else ""
    if inner not in ("http", "https") or not rest:
        raise ConfigError("webhook URL must start with webhook+https:// or webhook+http://")
    parts = parse_url(url, "notify").parts
    if not parts.hostname:
        raise ConfigError("webhook URL needs a host, like webhook+https://hooks.example.com/x")
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = {k: v for k, v in query if k in _SECRET_KEYS}
    kept = [(k, v) for k, v in query if k not in _SECRET_KEYS]
    target = urlunsplit((inner, parts.netloc, parts.path, urlencode(kept), ""))
    secret = options.get("secret") or found.get("secret")
    env_name = options.get("secret_env") or found.get("secret_env")
    if not secret and env_name:
        secret = os.environ.get(str(env_name))
        if not secret:
            raise ConfigError(f"webhook secret: environment variable {env_name} is not set")
    return target, (str(secret) if secret else None)


def delivery_id(message: Message) -> str:
    """Stable across retries of one message: a hash of its content (which includes the event)."""
    digest = hashlib.sha256(dumps(message.to_dict()))
    return digest.hexdigest()[:32]


class WebhookNotifier:
    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        secret_env: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self._target, self._secret = split_secret(url, {"secret": secret, "secret_env": secret_env})
        self._http = HttpPoster("webhook", float(timeout), client)
        self._clock = clock

    @property
    def target(self) -> str:
        """Where requests go: the URL without its ``webhook+`` prefix and secret parameters."""
        return self._target

    async def send(self, message: Message) -> None:
        sent_at = int(self._clock())
        delivery = delivery_id(message)
        body = dumps(
            {"version": 1, "delivery": delivery, "sent_at": sent_at, "message": message.to_dict()}
        )
        headers = {TIMESTAMP_HEADER: str(sent_at), DELIVERY_HEADER: delivery}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        await self._http.post(self._target, body, headers)

    async def aclose(self) -> None:
        await self._http.aclose()
