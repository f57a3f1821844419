"""The provider contract (runbook.testing.lock_contract) for every built-in provider."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runbook.locks.base import LockProvider
from runbook.locks.file import FileLocks
from runbook.locks.memory import MemoryLocks
from runbook.locks.sqlite import SqliteLocks
from runbook.testing import lock_contract
from runbook.testing.lock_contract import CHECKS, ManualTime


def _memory(tmp_path: Path, now: ManualTime) -> Callable[[], LockProvider]:
    shared = MemoryLocks(now=now)  # in-process: every "instance" is the same one
    return lambda: shared


def _file(tmp_path: Path, now: ManualTime) -> Callable[[], LockProvider]:
    return lambda: FileLocks(tmp_path / "locks", now=now)


def _sqlite(tmp_path: Path, now: ManualTime) -> Callable[[], LockProvider]:
    return lambda: SqliteLocks(str(tmp_path / "runbook.db"), now=now)


PROVIDERS = {"memory": _memory, "file": _file, "sqlite": _sqlite}


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
@pytest.mark.parametrize("kind", PROVIDERS)
def test_contract(kind: str, check: Callable[..., None], tmp_path: Path) -> None:
    now = ManualTime()
    check(PROVIDERS[kind](tmp_path, now), now)


class _ForgetsTokens(MemoryLocks):
    """Broken on purpose: a new instance (process) starts counting at 1 again."""


class _NotExclusive(MemoryLocks):
    def acquire(self, name, owner, *, actor, lease):  # type: ignore[no-untyped-def]
        current = self.holder(name)
        if current is not None and current.owner != owner:
            self.release(current)  # steals instead of refusing
        return super().acquire(name, owner, actor=actor, lease=lease)


@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (lambda now: lambda: _ForgetsTokens(now=now), lock_contract.check_tokens_strictly_increase),
        (lambda now: lambda: _NotExclusive(now=now), lock_contract.check_exclusive_between_owners),
    ],
    ids=["tokens-reset", "not-exclusive"],
)
def test_the_contract_catches_broken_providers(broken, check) -> None:
    now = ManualTime()
    with pytest.raises(AssertionError):
        check(broken(now), now)
