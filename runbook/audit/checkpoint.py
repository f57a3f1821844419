"""Signed checkpoints: the chain's head, signed with Ed25519, written into the chain itself.

The hash chain alone cannot tell a full rewrite (every hash recomputed) from the original. A
checkpoint can: it is an ordinary event of kind ``checkpoint`` whose ``data`` is

    {"seq", "hash", "count", "at", "key_fingerprint", "signature"}

where ``signature`` is Ed25519 over the canonical JSON of the other five fields. ``seq``/``hash``
name an earlier event of the same chain (the one that made the checkpoint due), ``count`` is how
many events the checkpoint covers (events 1..seq), ``at`` is that event's time. Because each
event's hash covers the one before it, one valid signature vouches for every event up to ``seq``.

When: after every event that ends a process's part of a run (``END_KINDS``) and after every
event whose ``seq`` is a multiple of ``EVERY``. The verifier applies the same rule
(``must_sign``): with the public key, an event that should have been signed and is not covered
by any valid checkpoint is reported, so stripping the checkpoints does not hide a rewrite.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from runbook.audit.canonical import canonical_json
from runbook.audit.events import AuditEvent
from runbook.audit.signing import PublicKey, Signer

KIND = "checkpoint"
EVERY = 1000
END_KINDS = frozenset({"run_finished", "run_paused", "run_cancelled"})
PAYLOAD_KEYS = ("seq", "hash", "count", "at", "key_fingerprint")
# How far back (in events) a checkpoint may point: other writers can append between an event
# and the checkpoint it made due, but not thousands of them.
WINDOW = 4096


def must_sign(event: AuditEvent) -> bool:
    """Whether a checkpoint covering ``event`` is due (the writer's and the verifier's rule)."""
    if event.kind == KIND:
        return False
    return event.kind in END_KINDS or (event.seq is not None and event.seq % EVERY == 0)


def payload(data: dict[str, Any]) -> bytes:
    """The signed bytes: the canonical JSON of the five payload fields."""
    return canonical_json({k: data[k] for k in PAYLOAD_KEYS}).encode()


def make_checkpoint(covered: AuditEvent, signer: Signer) -> AuditEvent:
    """The checkpoint event for a stored ``covered`` event (it carries no seq/hash of its own yet:
    the sink chains it like any other event)."""
    assert covered.seq is not None and covered.hash is not None
    data: dict[str, Any] = {
        "seq": covered.seq,
        "hash": covered.hash,
        "count": covered.seq,
        "at": covered.at,
        "key_fingerprint": signer.fingerprint,
    }
    data["signature"] = signer.sign(payload(data))
    return AuditEvent(
        kind=KIND,
        run_id=covered.run_id,
        runbook=covered.runbook,
        actor=covered.actor,
        host=covered.host,
        env=covered.env,
        at=covered.at,
        data=data,
    )


class CheckpointCheck:
    """``audit verify --pubkey``: every checkpoint is signed by a trusted key and matches the
    chain; every event ``must_sign`` names is covered by one (a ``Check`` for verify_chain)."""

    def __init__(self, keys: list[PublicKey]) -> None:
        self.keys = {k.fingerprint: k for k in keys}
        self.covered = 0  # the highest seq a valid checkpoint vouches for
        self.signed = 0
        self.used: set[str] = set()
        self._recent: OrderedDict[int, str] = OrderedDict()
        self._due: list[tuple[int, str, str]] = []  # (seq, kind, run) not yet covered
        self._last = 0

    def see(self, event: AuditEvent) -> str | None:
        seq = event.seq or 0
        problem = self._checkpoint(event, seq) if event.kind == KIND else None
        if problem:
            return problem
        if event.kind != KIND:
            self._last = seq
        if must_sign(event):
            self._due.append((seq, event.kind, event.run_id))
        self._recent[seq] = event.hash or ""
        if len(self._recent) > WINDOW:
            self._recent.popitem(last=False)
        return None

    def _checkpoint(self, event: AuditEvent, seq: int) -> str | None:
        data = event.data or {}
        where = f"checkpoint {seq}"
        missing = [k for k in (*PAYLOAD_KEYS, "signature") if k not in data]
        if missing:
            return f"{where} lacks {', '.join(missing)}: it is not a checkpoint runbook wrote"
        fp = data["key_fingerprint"]
        key = self.keys.get(fp) if isinstance(fp, str) else None
        if key is None:
            trusted = ", ".join(sorted(self.keys))
            return (
                f"{where} is signed by key {fp}, which is not a trusted key ({trusted}): "
                "it was forged, or pass the key that signed it with another --pubkey"
            )
        if not isinstance(data["signature"], str) or not key.verifies(
            payload(data), data["signature"]
        ):
            return (
                f"{where}: the signature does not verify with key {fp}: the checkpoint was "
                "forged or edited"
            )
        target = data["seq"]
        if not isinstance(target, int) or target >= seq or target not in self._recent:
            return (
                f"{where} vouches for event {target!r}, which is not among the events just "
                "before it: the checkpoint was moved or the events around it were rewritten"
            )
        if self._recent[target] != data["hash"]:
            return (
                f"event {target} was rewritten after it was signed: {where} (key {fp}) "
                f"says its hash is {str(data['hash'])[:16]}…, the trail has "
                f"{self._recent[target][:16]}…"
            )
        if data["count"] != target:
            return f"{where} counts {data['count']!r} events up to seq {target}: edited"
        self.signed += 1
        self.used.add(fp)
        self.covered = max(self.covered, target)
        self._due = [d for d in self._due if d[0] > self.covered]
        return None

    def finish(self, head: tuple[int, str] | None) -> tuple[int | None, str] | None:
        if not self._due:
            return None
        seq, kind, run = self._due[0]
        after = (
            f"after seq {self.covered}, the last signed one"
            if self.signed
            else "and the trail has no valid checkpoint at all"
        )
        what = f"{kind} of run {run}" if kind in END_KINDS else f"{kind}, a 1,000th event"
        return (
            seq,
            f"event {seq} ({what}) is not covered by a signed checkpoint, {after}: checkpoints "
            "were removed or the trail was rewritten from there (or audit_key was not set)",
        )

    def note(self) -> str | None:
        if not self.signed:
            return "no checkpoint yet (nothing had to be signed)"
        keys = ", ".join(sorted(self.used))
        plural = "s" if self.signed != 1 else ""
        text = f"{self.signed} checkpoint{plural} signed by {keys} up to seq {self.covered}"
        if self._last > self.covered:
            text += f" (events {self.covered + 1}..{self._last} not signed yet)"
        return text
