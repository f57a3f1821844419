"""The lock provider contract: named locks with an owner, a lease and a fencing token.

A lease is wall-clock time at the provider: a holder that stops renewing (a SIGKILLed process, a
paused VM) loses the lock when the lease runs out, and the next holder gets a strictly larger
fencing token, which the steps pass to the systems they change so a stale holder's writes can be
refused there. Providers never wait: ``acquire`` answers at once; waiting with backoff is the
``LockManager``'s job, in one place for every provider.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str  # the run id
    token: int  # fencing token: strictly increasing per lock name, across processes
    actor: str = ""
    acquired_at: float = 0.0  # epoch seconds
    expires_at: float = 0.0  # epoch seconds

    def evolve(self, **changes: Any) -> Lease:
        """A copy with ``changes`` (a renewal's new expiry): a lease handed out never changes."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat()

        return {
            "name": self.name,
            "owner": self.owner,
            "token": self.token,
            "actor": self.actor,
            "acquired_at": iso(self.acquired_at),
            "expires_at": iso(self.expires_at),
        }


def expand_name(template: str, *, env: str, params: Any) -> str:
    """A lock name template with ``{env}`` and ``{params.x}`` filled in.

    One function for the engine, the pre-run check and the CLI's plan, so they never disagree.
    Raises ``UsageError`` naming the template when a field cannot be filled.
    """
    import re
    import string

    from runbook.errors import UsageError

    secret = getattr(params, "secret_names", None) or frozenset()
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError:
        fields = []
    for field in fields:
        ref = re.match(r"params(?:\.(\w+)|\[['\"]?(\w+)['\"]?\])", field)
        name = ref and (ref.group(1) or ref.group(2))
        if name in secret:
            # Lock names are file names, store rows and `runbook locks` output: never a secret.
            raise UsageError(
                f"{template!r} uses secret param {name!r}: lock names are stored and shown in "
                "clear; lock on a value that is not secret"
            )
    try:
        return template.format(env=env, params=params)
    except (KeyError, AttributeError, IndexError, ValueError) as exc:
        raise UsageError(f"{template!r} cannot be expanded: {type(exc).__name__}: {exc}") from None


@runtime_checkable
class LockProvider(Protocol):
    """Opened from a URL by a plugin (``runbook_lock_providers`` hook)."""

    url: str

    def acquire(self, name: str, owner: str, *, actor: str, lease: float) -> Lease | None:
        """Take the lock now or return None; an expired lease counts as free.

        Re-acquiring a lock the same owner already holds returns its current lease (re-entrant per
        run, so a run-level and a step-level lock of the same name do not deadlock).
        """
        ...

    def renew(self, lease: Lease, seconds: float) -> Lease:
        """Extend the lease if still ours, else raise ``runbook.errors.LeaseLost``."""
        ...

    def release(self, lease: Lease) -> None:
        """Release if still ours; releasing a lost lock is not an error (nothing to undo)."""
        ...

    def holder(self, name: str) -> Lease | None:
        """The live lease on ``name``, or None."""
        ...

    def held(self) -> list[Lease]:
        """Every live lease, for ``runbook locks``."""
        ...

    def close(self) -> None:
        """Release connections and files; the leases stay held until they expire or are
        released, so closing is no way to give up a lock."""
        ...
