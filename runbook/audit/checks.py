"""What ``audit verify`` proves beyond the chain, each a ``Check`` seen in the same single pass.

- ``WitnessCheck``: the run store's copy of each run's last ``(seq, hash)`` is in the trail,
  unchanged. A cut tail (or a deleted file) leaves witnessed events missing, and the report names
  the runs and the missing range.
- ``HeadCheck``: an externally kept head (``--expect-head SEQ:HASH``) is present and intact.
- ``runbook.audit.checkpoint.CheckpointCheck``: signatures (``--pubkey``).

Decisions only: the caller reads the store and the sink; these classes see values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from runbook.audit.events import AuditEvent
from runbook.store.base import AuditWitness

_SHOWN_RUNS = 3


def _short(digest: str) -> str:
    return digest[:16] + "…" if len(digest) > 16 else digest


class WitnessCheck:
    """The run store witnessed each run's last event in this chain; the trail must hold it."""

    def __init__(
        self, witnesses: list[AuditWitness], *, store_runs: Sequence[str] = (), empty_why: str = ""
    ) -> None:
        self.witnesses = sorted(witnesses, key=lambda w: w.seq)
        self.store_runs = list(store_runs)  # some run ids the store holds (for an empty trail)
        self.empty_why = empty_why  # e.g. "the file does not exist"
        self._by_seq: dict[int, list[AuditWitness]] = defaultdict(list)
        for witness in self.witnesses:
            self._by_seq[witness.seq].append(witness)

    def see(self, event: AuditEvent) -> str | None:
        for witness in self._by_seq.get(event.seq or 0, ()):
            if event.hash != witness.hash or event.run_id != witness.run_id:
                return (
                    f"event {event.seq} ({event.kind} of run {event.run_id}) is not the event "
                    f"the run store witnessed there (run {witness.run_id}'s last, hash "
                    f"{_short(witness.hash)}; the trail has {_short(event.hash or '')}): the trail "
                    f"was rewritten at or before seq {event.seq}"
                )
        return None

    def finish(self, head: tuple[int, str] | None) -> tuple[int | None, str] | None:
        last = head[0] if head else 0
        beyond = [w for w in self.witnesses if w.seq > last]
        where = f"the trail ends at seq {last}" if head else self._empty()
        if beyond:
            end = max(w.seq for w in beyond)
            runs = ", ".join(f"{w.run_id} (to seq {w.seq})" for w in beyond[:_SHOWN_RUNS])
            more = len(beyond) - _SHOWN_RUNS
            runs += f" and {more} more" if more > 0 else ""
            noun = "run" if len(beyond) == 1 else "runs"
            return (
                last + 1,
                f"truncated: {where}, but the run store witnessed events up to seq {end}: "
                f"events {last + 1}..{end} are missing ({noun} {runs})",
            )
        if head is None and self.store_runs:
            shown = ", ".join(self.store_runs[:_SHOWN_RUNS])
            return (
                1,
                f"truncated: {where}, but the run store holds runs ({shown}): their events are "
                "missing",
            )
        return None

    def _empty(self) -> str:
        return f"the trail is empty ({self.empty_why})" if self.empty_why else "the trail is empty"

    def note(self) -> str | None:
        if not self.witnesses:
            if not self.store_runs:
                return None
            # Runs recorded to another trail (the config changed, or this is a copy): say that
            # nothing proved this one complete, rather than nothing.
            return (
                "not proven complete: the run store holds runs but no witness of this trail "
                "(they were recorded to another trail); a cut tail would not be found"
            )
        n = len(self.witnesses)
        return f"the run store's witness of {n} run{'s' if n != 1 else ''} agrees"


class HeadCheck:
    """``--expect-head SEQ:HASH``: that event is in the trail with that hash."""

    def __init__(self, seq: int, hash: str) -> None:
        self.seq = seq
        self.hash = hash
        self._found = False

    def see(self, event: AuditEvent) -> str | None:
        if event.seq != self.seq:
            return None
        self._found = True
        if event.hash != self.hash:
            return (
                f"event {self.seq} has hash {_short(event.hash or '')}, not the expected head "
                f"{_short(self.hash)}: the trail was rewritten at or before seq {self.seq}"
            )
        return None

    def finish(self, head: tuple[int, str] | None) -> tuple[int | None, str] | None:
        if self._found:
            return None
        last = head[0] if head else 0
        return (
            last + 1,
            f"the expected head {self.seq}:{_short(self.hash)} is missing: the trail ends at seq "
            f"{last}, so events {last + 1}..{self.seq} were cut off",
        )

    def note(self) -> str | None:
        return f"expected head {self.seq} present"


def parse_head(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` as ``audit head`` prints it; ``ValueError`` with the expected form."""
    seq, sep, digest = text.strip().partition(":")
    digest = digest.lower()
    if (
        not sep
        or not seq.isdigit()
        or int(seq) < 1
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise ValueError(
            f"{text!r} is not a head: expected SEQ:HASH, e.g. 42:<64 hex digits> "
            "(as `runbook audit head` prints it)"
        )
    return int(seq), digest
