"""``logging://NAME``: a chained JSON feed on a stdlib logger that never drops an event silently."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from runbook.audit.events import GENESIS, AuditEvent
from runbook.audit.logsink import LoggingSink
from runbook.audit.query import open_sink
from runbook.audit.verify import verify_chain
from runbook.errors import AuditError

from .conftest import make_event


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, Collect]]:
    log = logging.getLogger(f"test.audit.{uuid.uuid4().hex}")  # unique: tests run in parallel
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = Collect()
    log.addHandler(handler)
    yield log, handler
    log.removeHandler(handler)


def test_each_event_is_one_canonical_json_record_chained_in_process(
    logger: tuple[logging.Logger, Collect],
) -> None:
    log, handler = logger
    sink = open_sink(f"logging://{log.name}")
    stored = [sink.append(make_event(i)) for i in range(3)]
    assert [r.getMessage() for r in handler.records] == [
        json.dumps(e.to_dict(), sort_keys=True, separators=(",", ":")) for e in stored
    ]
    received = [AuditEvent.from_dict(json.loads(r.getMessage())) for r in handler.records]
    assert received[0].seq == 1 and received[0].prev_hash == GENESIS
    assert verify_chain(received).ok  # what the receiving system can check
    assert {r.levelno for r in handler.records} == {logging.INFO}
    assert handler.records[0].audit_event == stored[0].to_dict()
    assert len({r.audit_chain for r in handler.records}) == 1


def test_each_sink_instance_is_its_own_chain(logger: tuple[logging.Logger, Collect]) -> None:
    log, handler = logger
    a, b = open_sink(f"logging://{log.name}"), open_sink(f"logging://{log.name}")
    assert a.append(make_event(0)).seq == 1
    assert b.append(make_event(1)).seq == 1
    assert handler.records[0].audit_chain != handler.records[1].audit_chain


def test_level_from_url_or_option(logger: tuple[logging.Logger, Collect]) -> None:
    log, handler = logger
    open_sink(f"logging://{log.name}?level=warning").append(make_event(0))
    open_sink(f"logging://{log.name}", level="ERROR").append(make_event(0))
    assert [r.levelno for r in handler.records] == [logging.WARNING, logging.ERROR]
    with pytest.raises(AuditError, match="unknown logging level 'LOUD'"):
        open_sink(f"logging://{log.name}", level="LOUD")


def test_logger_without_handler_refuses_instead_of_dropping() -> None:
    log = logging.getLogger(f"test.audit.{uuid.uuid4().hex}")
    log.setLevel(logging.INFO)
    log.propagate = False
    with pytest.raises(AuditError, match="has no handler, the event would be dropped"):
        open_sink(f"logging://{log.name}").append(make_event(0))


def test_logger_disabled_for_the_level_refuses(logger: tuple[logging.Logger, Collect]) -> None:
    log, _ = logger
    log.setLevel(logging.ERROR)
    with pytest.raises(AuditError, match="is not enabled for INFO"):
        open_sink(f"logging://{log.name}").append(make_event(0))


def test_raising_handler_becomes_audit_error(logger: tuple[logging.Logger, Collect]) -> None:
    log, handler = logger

    def boom(record: logging.LogRecord) -> None:
        raise OSError("syslog socket closed")

    handler.emit = boom  # type: ignore[method-assign]
    sink = open_sink(f"logging://{log.name}")
    with pytest.raises(AuditError, match="failed: OSError: syslog socket closed"):
        sink.append(make_event(0))
    handler.emit = Collect.emit.__get__(handler)  # type: ignore[method-assign]
    assert sink.append(make_event(0)).seq == 1  # the failed event did not advance the chain


def test_a_feed_cannot_be_queried_or_verified_here() -> None:
    sink = LoggingSink.open("logging://runbook.audit")
    assert sink.queryable is False
    with pytest.raises(AuditError, match="is a feed for an external system"):
        list(sink.events())
    with pytest.raises(AuditError, match="cannot be queried or verified"):
        sink.verify()


def test_bare_url_uses_the_runbook_audit_logger() -> None:
    assert LoggingSink.open("logging://").logger.name == "runbook.audit"
