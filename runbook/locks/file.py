"""``file://DIR``: the default lock provider, for runs that share one host (and one disk).

Why this shape:

* One small JSON state file per lock name, replaced atomically (temp file, fsync, ``os.replace``,
  fsync of the directory), so a crash at any instant leaves either the old or the new state,
  never a torn one.
* Every read-modify-write happens under an exclusive ``fcntl.flock`` on a sibling ``.lock`` file
  that is held for microseconds, never for the lifetime of the lock. The lock itself is the lease
  written in the state file, so a holder that is SIGKILLed or SIGSTOPped blocks nobody beyond its
  lease, and the kernel drops the short ``flock`` of a killed process by itself.
* The state file outlives the lease: after a release it keeps the last fencing token it issued,
  so tokens strictly increase per lock name across processes and releases, forever (as long as
  the directory is kept).
* Lock names are arbitrary strings (``web-prod``, ``db:{x}``); file names are a readable slug plus
  a hash of the name, and the real name is stored inside the file.

``flock`` is local to one kernel: on NFS it is unreliable, so runs on several hosts should use
``sqlite://`` on a local disk of a shared host, ``redis://`` or ``postgresql://`` instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runbook.errors import LeaseLost, LockError
from runbook.locks.base import Lease

DEFAULT_DIR = ".runbook/locks"
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")
_STATE_VERSION = 1


def file_name(name: str) -> str:
    """The file stem for a lock name: readable, filesystem-safe, and unique by its hash."""
    slug = _SLUG.sub("_", name).strip("._")[:64] or "lock"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    return f"{slug}-{digest}"


def dir_from_url(url: str) -> Path:
    """``file://.runbook/locks`` is relative to the cwd, ``file:///var/lib/runbook`` absolute."""
    rest = url.split("://", 1)[1] if "://" in url else url
    rest = rest.split("?", 1)[0]
    return Path(os.path.expanduser(rest or DEFAULT_DIR))


class FileLocks:
    """Leases in ``DIR/<slug>-<hash>.json``, updated under a short ``flock`` on ``.lock``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        url: str | None = None,
        now: Callable[[], float] = time.time,
        busy_timeout: float = 5.0,
        durable: bool = True,
    ) -> None:
        self.dir = Path(directory)
        self.url = url or f"file://{self.dir}"
        self._now = now
        self._busy_timeout = busy_timeout
        self._durable = durable
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LockError(f"cannot create lock directory {self.dir}: {exc.strerror}") from None

    @classmethod
    def open(cls, url: str, *, durability: str = "power", **_: Any) -> FileLocks:
        """``durability="process"``: state files are replaced without fsync (they survive a
        killed process, not a power cut), as the store and the audit of the same project."""
        return cls(dir_from_url(url), url=url, durable=durability != "process")

    # -- provider protocol ------------------------------------------------------------------

    def acquire(self, name: str, owner: str, *, actor: str, lease: float) -> Lease | None:
        with self._locked(name) as stem:
            state = self._read(stem, name)
            now = self._now()
            current = _live(state, now)
            if current is not None:
                if current.owner != owner:
                    return None
                renewed = current.evolve(expires_at=now + lease)
                self._write(stem, _state(renewed), durable=False)
                return renewed
            new = Lease(
                name=name,
                owner=owner,
                token=_last_token(state) + 1,
                actor=actor,
                acquired_at=now,
                expires_at=now + lease,
            )
            self._write(stem, _state(new), durable=True)
            return new

    def renew(self, lease: Lease, seconds: float) -> Lease:
        with self._locked(lease.name) as stem:
            state = self._read(stem, lease.name)
            now = self._now()
            current = _live(state, now)
            if current is None or current.owner != lease.owner or current.token != lease.token:
                raise LeaseLost(lost_message(lease, current))
            renewed = current.evolve(expires_at=now + seconds)
            self._write(stem, _state(renewed), durable=False)
            return renewed

    def release(self, lease: Lease) -> None:
        with self._locked(lease.name) as stem:
            state = self._read(stem, lease.name)
            if state and state.get("owner") == lease.owner and state.get("token") == lease.token:
                self._write(stem, _released(state), durable=True)

    def holder(self, name: str) -> Lease | None:
        # No flock needed: the state file is only ever replaced whole.
        return _live(self._read(file_name(name), name), self._now())

    def held(self) -> list[Lease]:
        now = self._now()
        leases = []
        for path in sorted(self.dir.glob("*.json")):
            lease = _live(self._load(path), now)
            if lease is not None:
                leases.append(lease)
        return sorted(leases, key=lambda lease: lease.name)

    def close(self) -> None:
        pass

    # -- storage ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[str]:
        stem = file_name(name)
        path = self.dir / f"{stem}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockError(f"cannot open {path}: {exc.strerror}") from None
        try:
            self._flock(fd, path)
            yield stem
        finally:
            os.close(fd)  # drops the flock

    def _flock(self, fd: int, path: Path) -> None:
        # Polling with a bound instead of a blocking flock: a process stopped inside the tiny
        # critical section must produce an error, not hang every other run.
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"{path} stayed busy for {self._busy_timeout:g}s: a process is stopped "
                        "while updating this lock; find it with `fuser` and resume or kill it"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.01)

    def _read(self, stem: str, name: str) -> dict[str, Any] | None:
        state = self._load(self.dir / f"{stem}.json")
        if state is not None and state.get("name") != name:
            raise LockError(
                f"{self.dir / stem}.json belongs to lock {state.get('name')!r}, "
                f"not {name!r} (hash collision or a hand-edited file)"
            )
        return state

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LockError(f"cannot read {path}: {exc.strerror}") from None
        try:
            state = json.loads(text)
            if not isinstance(state, dict) or not isinstance(state.get("token"), int):
                raise ValueError("not a lock state object")
        except ValueError as exc:
            # Never reset a corrupt file: that would restart the fencing tokens at 1.
            raise LockError(
                f"{path} is not a runbook lock state file ({exc}); fix or remove it by hand"
            ) from None
        return state

    def _write(self, stem: str, state: dict[str, Any], *, durable: bool) -> None:
        """Replace the state file atomically; ``durable`` also makes the rename survive a power cut.

        The new content is always fsynced before the rename, so a crash never leaves an empty or
        torn file. The directory is fsynced too for a new token (forgetting it could hand the same
        token out twice) and for a release (forgetting it would bring back a released lease, maybe
        a long paused-run one). Renewals skip it: a renewal lost in a power cut only brings back
        an earlier expiry of the same lease, and they are the frequent writes.
        """
        target = self.dir / f"{stem}.json"
        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{stem}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(state, f, sort_keys=True)
                    f.flush()
                    if self._durable:
                        os.fsync(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            if self._durable and durable:
                dir_fd = os.open(self.dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise LockError(f"cannot write {target}: {exc.strerror}") from None


# -- state <-> lease --------------------------------------------------------------------------


def _last_token(state: dict[str, Any] | None) -> int:
    return int(state["token"]) if state else 0


def _live(state: dict[str, Any] | None, now: float) -> Lease | None:
    if not state or not state.get("owner") or float(state.get("expires_at") or 0) <= now:
        return None
    return Lease(
        name=state["name"],
        owner=state["owner"],
        token=int(state["token"]),
        actor=state.get("actor") or "",
        acquired_at=float(state["acquired_at"]),
        expires_at=float(state["expires_at"]),
    )


def _state(lease: Lease) -> dict[str, Any]:
    return {
        "version": _STATE_VERSION,
        "name": lease.name,
        "owner": lease.owner,
        "actor": lease.actor,
        "token": lease.token,
        "acquired_at": lease.acquired_at,
        "expires_at": lease.expires_at,
    }


def _released(state: dict[str, Any]) -> dict[str, Any]:
    # Keep the name and the last token: the next holder's token must be larger.
    return {
        "version": _STATE_VERSION,
        "name": state["name"],
        "owner": None,
        "actor": None,
        "token": state["token"],
        "acquired_at": None,
        "expires_at": None,
    }


def lost_message(lease: Lease, current: Lease | None) -> str:
    """Why a renewal failed, naming the new holder when there is one."""
    if current is None:
        why = "its lease expired"
    elif current.owner == lease.owner:
        why = f"the run re-acquired it with token {current.token}"
    else:
        who = f"run {current.owner}" + (f" ({current.actor})" if current.actor else "")
        why = f"it expired and {who} took it over with token {current.token}"
    return f"lease on lock {lease.name!r} (token {lease.token}) was lost: {why}"
