"""What a ``Runner`` has opened: its run store, audit sinks and lock provider, and its plugins.

Providers are given as URLs (opened through plugins on first use, so building a Runner connects
nowhere) or as objects. One ``Providers`` is made per Runner and handed to every service that
acts for it (the durable-run operations, decisions, expiry), so a stored run is continued,
approved or expired with exactly the store, trail and locks a new run gets, and ``close()``
closes what was opened once, whoever opened it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runbook.audit.events import AuditSink
from runbook.audit.log import AuditLog
from runbook.clock import Clock
from runbook.errors import UsageError
from runbook.grouping import StartGroup, starts_together
from runbook.locks.base import LockProvider
from runbook.plugins import Plugins
from runbook.store.base import RunStore

StoreSpec = str | RunStore | None
AuditSpec = str | Mapping[str, Any] | AuditSink
LockSpec = str | LockProvider | None


class Providers:
    """A Runner's store, sinks and lock provider (each opened on first use), plugins and clock."""

    def __init__(
        self,
        *,
        plugins: Plugins,
        clock: Clock,
        store: StoreSpec,
        audit: Sequence[AuditSpec],
        locks: LockSpec,
        signer: Any = None,
        durability: str = "power",
    ) -> None:
        self.plugins = plugins
        self.clock = clock
        self.durability = durability
        self.store_spec = store  # a URL or the store itself (the CLI reads it before opening)
        self._audit_spec = list(audit)
        self._locks_spec = locks
        self._signer = signer
        self._store: RunStore | None = None
        self._sinks: list[AuditSink] | None = None
        self._locks: LockProvider | None = None
        self._start_groups: weakref.WeakKeyDictionary[Any, StartGroup] = weakref.WeakKeyDictionary()

    def start_group(self) -> StartGroup:
        """The starts of the runs on this event loop that share these providers (one store, the
        same sinks): those reaching a start on the same turn are one write (runbook.grouping)."""
        loop = asyncio.get_running_loop()
        group = self._start_groups.get(loop)
        if group is None:
            group = self._start_groups[loop] = StartGroup(starts_together)
        return group

    def add_plugin(self, plugin: Any) -> None:
        """Register ``plugin`` (a runbookconf.py, the metrics reporter), first making the
        process's shared manager one of this Runner's own: other Runners must not see it."""
        if not self.plugins.has(plugin):
            self.plugins = self.plugins.unshared()
            self.plugins.add(plugin)

    @property
    def store(self) -> RunStore | None:
        """The run store, opened from its URL on first use (None: runs are not kept)."""
        if self._store is None and self.store_spec is not None:
            spec = self.store_spec
            self._store = (
                self.plugins.open("store", spec, **self._durable) if isinstance(spec, str) else spec
            )
        return self._store

    def require_store(self) -> RunStore:
        """The run store, for operations on stored runs: without one they are a usage error."""
        if self.store is None:
            raise UsageError("this runner has no run store")
        return self.store

    @property
    def _durable(self) -> dict[str, str]:
        """Options for opening a store or sink: nothing at the default, so a plugin that does
        not know the option is never handed it unless the user asked for ``process``."""
        return {} if self.durability == "power" else {"durability": self.durability}

    @property
    def sinks(self) -> list[AuditSink]:
        """The audit sinks, each behind an ``AuditLog`` so the store witnesses every event (and
        an ``audit_key`` signs checkpoints): a trail cut short or edited is then detected."""
        if self._sinks is None:
            sinks = []
            for spec in self._audit_spec:
                if isinstance(spec, str):
                    sinks.append(self.plugins.open("audit", self._in_store(spec), **self._durable))
                elif isinstance(spec, Mapping):
                    options = {k: v for k, v in spec.items() if k != "url"}
                    options = {**self._durable, **options}
                    sinks.append(self.plugins.open("audit", self._in_store(spec["url"]), **options))
                else:
                    sinks.append(spec)
            # Every sink is written through an AuditLog: the store witnesses each event, and
            # with an audit_key signed checkpoints are appended (runbook.audit.log).
            store = self.store
            self._sinks = [AuditLog(s, store=store, signer=self._signer) for s in sinks]
        return self._sinks

    def _in_store(self, url: str) -> str:
        """Bare ``sqlite://`` means "in the run store": the store's own SQLite file."""
        store = getattr(self.store_spec, "url", self.store_spec)
        if (
            url.partition("?")[0] == "sqlite://"
            and isinstance(store, str)
            and store.startswith("sqlite://")
        ):
            return store
        return url

    @property
    def lock_provider(self) -> LockProvider | None:
        """The lock provider, opened from its URL on first use (None: locks are not taken)."""
        if self._locks is None and self._locks_spec is not None:
            spec = self._locks_spec
            self._locks = (
                self.plugins.open("lock", spec, **self._durable) if isinstance(spec, str) else spec
            )
        return self._locks

    def run_status(self, run_id: str) -> str | None:
        """A lock holder's status in this store (None when it is not a run of this store): what
        a lock wait says about the run holding the lock."""
        store = self.store
        return None if store is None else store.get_run(run_id).status

    def close(self, also: Iterable[object] = ()) -> None:
        """Close the providers opened from URLs (connection pools, files), then ``also``; one
        given as an object is its owner's to close."""
        opened: list[object] = []  # stores, lock providers, sinks: each may close
        if isinstance(self.store_spec, str) and self._store is not None:
            opened.append(self._store)
        if isinstance(self._locks_spec, str) and self._locks is not None:
            opened.append(self._locks)
        if self._sinks is not None:
            opened += [
                s
                for s, spec in zip(self._sinks, self._audit_spec, strict=True)
                if not isinstance(spec, AuditSink)
            ]
        opened.extend(also)
        for provider in opened:
            close = getattr(provider, "close", None)
            if close is not None:
                close()
        self._store, self._locks, self._sinks = None, None, None
