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

A URL that cannot be parsed shows as ``scheme://***``: nothing of it is guessed at, and a port
that is not one (``redis://user:pw/0``, the ``@host`` forgotten) shows as ``***``: it may be a
password.

:func:`parse_url` is the one way core and plugins read a provider URL's host and port: a malformed
one (``host:notaport``, ``[::1`` without its bracket, ``:99999``) is a ``ConfigError`` naming the
setting and the redacted URL, never urllib's ``ValueError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from runbook.errors import ConfigError

HIDDEN = "***"

# Schemes whose URL is an address, not a capability. A plugin whose scheme is a location and not
# listed here still gets the stricter treatment, which is safe, only less informative.
LOCATION_SCHEMES = frozenset(
    {
        "file",
        "haproxy",
        "haproxy+unix",
        "jsonl",
        "logging",
        "memory",
        "postgres",
        "postgresql",
        "redis",
        "rediss",
        "sqlite",
        "temporal",
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
    userinfo, at, hosts = netloc.rpartition("@")
    shown = []
    for hostinfo in hosts.split(","):  # libpq's host1:port1,host2:port2
        try:
            _host_port(hostinfo)
            shown.append(hostinfo)
        except _Malformed:
            return f"{scheme}://{HIDDEN}"
        except _BadPort:  # not a port: perhaps a password whose "@host" was forgotten
            shown.append(_without_port(hostinfo) + ":" + HIDDEN)
    netloc = ",".join(shown)
    if at:
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + HIDDEN
        netloc = f"{userinfo}@{netloc}"
    location = f"{scheme}://{netloc}{slash}{path}"
    if qsep:
        location += "?" + "&".join(_option(pair) for pair in query.split("&"))
    return location


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


# -- host and port -------------------------------------------------------------------------------

MAX_PORT = 65535


@dataclass(frozen=True)
class ParsedURL:
    """A URL whose host and port :func:`parse_url` checked: reading them cannot fail."""

    parts: SplitResult
    hosts: tuple[tuple[str, int | None], ...]  # (host, port) each; ("", None) for no host

    @property
    def host(self) -> str:
        """The (first) host, lower-cased, without the brackets of an IPv6 address; "" if none."""
        return self.hosts[0][0]

    @property
    def port(self) -> int | None:
        """The (first) host's port, 1-65535, or None when the URL gives none."""
        return self.hosts[0][1]


class _Malformed(ValueError):
    """The host part cannot be read at all (an IPv6 bracket missing, text after it)."""


class _BadPort(ValueError):
    """The text after the host's colon is not a port."""


def parse_url(
    url: str, setting: str, *, need_host: bool = False, several_hosts: bool = False
) -> ParsedURL:
    """``url`` split, its host and port checked: the one way core and plugins read them.

    ``setting`` names what the URL configures (``store``, ``lock``, ``audit``, ``metrics``,
    ``router``, ``executor``, ``notify``); a malformed host or port, or no host with
    ``need_host``, is a ``ConfigError`` saying ``SETTING: REDACTED-URL: what is wrong``. The port
    must be 1-65535. ``several_hosts`` reads libpq's ``host1:port1,host2:port2``.
    """
    netloc = url.partition("://")[2]
    for stop in "/?#":
        netloc = netloc.split(stop, 1)[0]
    hostinfos = netloc.rpartition("@")[2].split(",") if several_hosts else None
    try:
        parts = urlsplit(url)
        if hostinfos is None:
            hostinfos = [parts.netloc.rpartition("@")[2]]
        hosts = tuple(_host_port(hostinfo) for hostinfo in hostinfos)
    except _BadPort as exc:
        raise ConfigError(f"{setting}: {redact_url(url)}: {exc}") from None
    except ValueError:  # urllib's or _Malformed
        raise ConfigError(f"{setting}: {redact_url(url)}: {_malformed(netloc)}") from None
    if need_host and not all(host for host, _ in hosts):
        raise ConfigError(f"{setting}: {redact_url(url)}: the URL has no host")
    return ParsedURL(parts, hosts)


def _host_port(hostinfo: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` as ``(host, port)``; ``_Malformed`` or ``_BadPort``."""
    if hostinfo.startswith("["):
        host, close, after = hostinfo[1:].partition("]")
        if not close or (after and not after.startswith(":")):
            raise _Malformed(hostinfo)
        port_text = after[1:]
    elif "[" in hostinfo or "]" in hostinfo:
        raise _Malformed(hostinfo)
    else:
        host, _, port_text = hostinfo.partition(":")
    if not port_text:
        return host.lower(), None
    if not (port_text.isascii() and port_text.isdigit()):
        raise _BadPort("the port is not a number")  # never quoted: it may be a password
    port = int(port_text)
    if not 1 <= port <= MAX_PORT:
        raise _BadPort(f"the port must be from 1 to {MAX_PORT}")
    return host.lower(), port


def _without_port(hostinfo: str) -> str:
    if hostinfo.startswith("["):
        return hostinfo.partition("]")[0] + "]"
    return hostinfo.partition(":")[0]


def _malformed(netloc: str) -> str:
    if netloc.count("[") != netloc.count("]"):
        return "an IPv6 host needs both its brackets, like [::1] or [::1]:5432"
    if "[" in netloc:
        return "only an IPv6 address goes in brackets, followed by nothing or :PORT"
    return "not a valid URL"
