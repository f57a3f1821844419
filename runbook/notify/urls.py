"""Channel URLs carry secrets (a Slack webhook token in the path, an SMTP password, a signing key).

Anything a person or the audit trail sees names a channel through ``runbook.urls.redact_url``
(scheme and host only, for a channel), and error text is scrubbed of every secret-bearing part of
the URL it came from.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from runbook.redact import Redactor
from runbook.urls import redact_url

__all__ = ["redact_url", "scrub", "url_secrets"]


def url_secrets(url: str) -> list[str]:
    """Every substring of ``url`` that could be a credential, for scrubbing free text."""
    candidates = {url}
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    scheme = parts.scheme
    if "+" in scheme:  # webhook+https://... is requested as https://...
        candidates.add(url.split("+", 1)[1])
    rest = url.split("://", 1)[1] if "://" in url else url
    candidates.add(rest)
    host = parts.hostname or ""
    path = parts.path.strip("/")
    if path:
        candidates.add(f"{host}{parts.path}")
        candidates.add(parts.path)
        candidates.update(seg for seg in path.split("/") if len(seg) >= 8)
    if parts.query:
        candidates.add(parts.query)
        candidates.update(value for _, value in parse_qsl(parts.query) if len(value) >= 4)
    if parts.password:
        candidates.update({parts.password, unquote(parts.password)})
    return [c for c in candidates if c]


def scrub(text: str, *urls: str) -> str:
    """``text`` with every secret-bearing part of ``urls`` masked.

    A whole URL (as configured, or as requested without its ``webhook+`` prefix) becomes its
    redacted form, so the message still says which channel; any other piece becomes ``***``.
    """
    secrets: list[str] = []
    for url in urls:
        whole = [url, url.split("+", 1)[1]] if "+" in url.split("://", 1)[0] else [url]
        for form in sorted(whole, key=len, reverse=True):
            text = text.replace(form, redact_url(url))
        secrets.extend(url_secrets(url))
    return Redactor(secrets).text(text) if secrets else text
