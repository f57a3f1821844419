"""The one way runbook shows a provider URL to a person: credentials hidden, location kept.

Every message, log line, audit event and CLI output that names a store, sink, lock provider or
notification channel goes through :func:`redact_url`, in core and in plugins, so there is one
policy to review instead of one per module.

Two kinds of URL, one rule each:

- A **location** URL (``jsonl://``, ``sqlite://``, ``postgresql://``, ``redis://``...) names a
  place: a file, a database, a schema. Only its credentials are hidden: the password in the
  userinfo and the value of any query option whose name says it is a secret (``password``,
  ``sslpassword``, ``token``, ``api_key``...). The user, host, port, path and other options
  survive, because they are what tells an operator *which* database a message is about.
- Any other URL (``slack://``, ``smtp://``, ``webhook+https://``...) may carry its credential in
  any part: a webhook token is the path, a Sentry-style key is the user, a signature is a query
  value. Only ``scheme://host:port`` survives, followed by ``/***`` when anything else was there.

A URL that cannot be parsed shows as ``scheme://***``: nothing of it is guessed at.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

HIDDEN = "***"

# Schemes whose URL is an address, not a capability. A plugin whose scheme is a location and not
# listed here still gets the stricter treatment, which is safe, only less informative.
LOCATION_SCHEMES = frozenset(
    {
        "file",
        "jsonl",
        "logging",
        "memory",
        "postgres",
        "postgresql",
        "redis",
        "rediss",
        "sqlite",
        "unix",
    }
)

_SECRET_OPTION = re.compile(r"pass|pwd|secret|token|key|auth|cred|sig", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` fit for any output: see the module docstring for what is kept.

    >>> redact_url("postgresql://ops:s3cret@db:5432/audit?schema=team&password=x")
    'postgresql://ops:***@db:5432/audit?schema=team&password=***'
    >>> redact_url("slack://hooks.slack.com/services/T0/B0/XXXX")
    'slack://hooks.slack.com/***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return HIDDEN
    if scheme.lower() in LOCATION_SCHEMES:
        return _location(scheme, rest)
    return _capability(url, scheme)


def _location(scheme: str, rest: str) -> str:
    rest = rest.split("#", 1)[0]
    address, qsep, query = rest.partition("?")
    netloc, slash, path = address.partition("/")
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + HIDDEN
        netloc = f"{userinfo}@{host}"
    shown = f"{scheme}://{netloc}{slash}{path}"
    if qsep:
        shown += "?" + "&".join(_option(pair) for pair in query.split("&"))
    return shown


def _option(pair: str) -> str:
    name, eq, value = pair.partition("=")
    if eq and value and _SECRET_OPTION.search(name):
        return f"{name}={HIDDEN}"
    return pair


def _capability(url: str, scheme: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port, say: show nothing of it rather than guess
        return f"{scheme}://{HIDDEN}"
    tail = f"/{HIDDEN}" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{scheme}://{host}{port}{tail}"
