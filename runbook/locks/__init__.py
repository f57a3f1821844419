"""Locks: the provider protocol, the built-in providers and the manager that waits and renews."""

from runbook.locks.base import Lease, LockProvider

__all__ = ["Lease", "LockProvider"]
