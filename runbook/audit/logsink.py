"""``logging://NAME``: every event as one JSON record on the stdlib logger ``NAME``.

A logging sink is a *feed* for an external system (journald, a log shipper, a SIEM), not a store:
runbook cannot read back what the handlers did with a record, so ``events()`` and ``verify()``
raise a clear ``AuditError`` instead of pretending the trail is empty, and ``runbook audit verify``
skips such sinks with a note. Verify the trail where it lands, or pair this sink with a ``jsonl://``
or ``sqlite://`` one.

The chain is kept in-process: ``seq`` starts at 1 in each process and ``prev_hash`` links the
records of that process. Each record carries ``audit_chain`` (``host:pid:nonce``) as a ``logging``
extra so the receiving side can tell the per-process chains apart and verify each one.

The record's message is the event's canonical JSON; ``record.audit_event`` holds the same event as
a dict for structured handlers. A logger with no handler (or disabled for the level) would drop the
event silently, so ``append`` refuses with an ``AuditError`` instead. Handlers themselves swallow
their errors (``logging`` reports them on stderr), which is one more reason this is a feed.

Options (config or URL query): ``level`` (a name or number, default ``INFO``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from runbook.audit.canonical import canonical_json
from runbook.audit.events import GENESIS, AuditEvent
from runbook.audit.query import AuditQuery
from runbook.audit.verify import VerifyReport
from runbook.errors import AuditError

DEFAULT_LOGGER = "runbook.audit"


def _truthy(value: object) -> bool:
    return str(value).lower() in {"1", "true", "yes", "on"}


def _level(value: object) -> int:
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    if not isinstance(level, int):
        raise AuditError(f"unknown logging level {value!r} (use DEBUG, INFO, WARNING, ...)")
    return level


class LoggingSink:
    """Feeds the chain to a stdlib logger; see the module docstring."""

    queryable = False

    def __init__(
        self,
        url: str,
        logger: logging.Logger,
        *,
        level: int = logging.INFO,
        best_effort: bool = False,
    ) -> None:
        self.url = url
        self.logger = logger
        self.level = level
        self.best_effort = best_effort
        self.chain_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._seq = 0
        self._prev = GENESIS
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, url: str, best_effort: bool = False, level: object = None, **_options: Any
    ) -> LoggingSink:
        rest = url.split("://", 1)[1]
        name, _, query = rest.partition("?")
        if level is None:
            level = parse_qs(query).get("level", ["INFO"])[-1]
        return cls(
            url,
            logging.getLogger(name or DEFAULT_LOGGER),
            level=_level(level),
            best_effort=_truthy(best_effort),
        )

    def append(self, event: AuditEvent) -> AuditEvent:
        with self._lock:
            if not self.logger.isEnabledFor(self.level):
                raise AuditError(
                    f"audit sink {self.url}: logger {self.logger.name!r} is not enabled for "
                    f"{logging.getLevelName(self.level)}, the event would be dropped; lower its "
                    "level or mark the sink best_effort"
                )
            if not self.logger.hasHandlers():
                raise AuditError(
                    f"audit sink {self.url}: logger {self.logger.name!r} has no handler, the "
                    "event would be dropped; configure logging (logging.basicConfig, dictConfig)"
                    " or mark the sink best_effort"
                )
            stored = event.chained(self._seq + 1, self._prev)
            body = stored.to_dict()
            try:
                self.logger.log(
                    self.level,
                    "%s",
                    canonical_json(body),
                    extra={"audit_event": body, "audit_chain": self.chain_id},
                )
            except Exception as exc:  # a handler configured to raise (logging.raiseExceptions)
                raise AuditError(
                    f"audit sink {self.url} failed: {type(exc).__name__}: {exc}"
                ) from exc
            self._seq, self._prev = stored.seq or 0, stored.hash or GENESIS
            return stored

    def _not_queryable(self) -> AuditError:
        return AuditError(
            f"audit sink {self.url} is a feed for an external system and cannot be queried or "
            "verified by runbook; verify the records where they are collected, or query a "
            "jsonl:// or sqlite:// sink"
        )

    def events(self, query: AuditQuery | None = None) -> Iterator[AuditEvent]:
        raise self._not_queryable()

    def verify(self) -> VerifyReport:
        raise self._not_queryable()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LoggingSink({self.url!r})"
