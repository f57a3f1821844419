"""The audit trail: hash-chained events and the sinks that keep them."""

from runbook.audit.events import (
    GENESIS,
    KINDS,
    AuditEvent,
    AuditQuery,
    AuditSink,
    VerifyReport,
    canonical_json,
    event_hash,
    verify_chain,
)
from runbook.audit.memory import MemorySink

__all__ = [
    "GENESIS",
    "KINDS",
    "AuditEvent",
    "AuditQuery",
    "AuditSink",
    "MemorySink",
    "VerifyReport",
    "canonical_json",
    "event_hash",
    "verify_chain",
]
