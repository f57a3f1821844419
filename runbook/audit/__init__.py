"""The audit trail: hash-chained events and the sinks that keep them."""

from runbook.audit.canonical import canonical_json
from runbook.audit.events import GENESIS, KINDS, AuditEvent, AuditSink, event_hash
from runbook.audit.memory import MemorySink
from runbook.audit.query import AuditQuery
from runbook.audit.verify import VerifyReport, verify_chain

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
