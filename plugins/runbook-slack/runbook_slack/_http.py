"""One POST with the error mapping every HTTP notifier shares.

429, 5xx, timeouts and connection errors are ``TransientNotificationError`` (the dispatcher
retries them, after ``Retry-After`` when the server sends one); any other 4xx is a permanent
``NotificationError``. Messages name the service and the host only: the URL is the credential.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from runbook.errors import NotificationError
from runbook.notify import TransientNotificationError

DEFAULT_TIMEOUT = 10.0
_BODY_TAIL = 200


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpPoster:
    """Owns one ``httpx.AsyncClient`` per channel, created lazily on the loop that sends."""

    def __init__(
        self,
        service: str,
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self._client = client
        self._owns_client = client is None

    async def post(
        self, url: str, content: bytes, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        host = urlsplit(url).hostname or "?"
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), follow_redirects=False
            )
        sent_headers = {
            "Content-Type": "application/json",
            "User-Agent": "runbook-notify/0.1",
            **(headers or {}),
        }
        try:
            response = await self._client.post(url, content=content, headers=sent_headers)
        except httpx.TimeoutException:
            raise TransientNotificationError(
                f"{self.service} at {host}: no answer within {self.timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            # The exception text may quote the URL; say what kind of failure it was instead.
            raise TransientNotificationError(
                f"{self.service} at {host}: connection failed ({type(exc).__name__})"
            ) from None
        status = response.status_code
        if status < 300:
            return response
        body = " ".join(response.text.split())[:_BODY_TAIL]
        detail = f"{self.service} at {host} answered HTTP {status}" + (f": {body}" if body else "")
        if status == 429 or status >= 500:
            raise TransientNotificationError(
                detail, retry_after(response.headers.get("Retry-After"))
            )
        raise NotificationError(detail)

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None
