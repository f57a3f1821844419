"""``file://PATH``: traffic weights in a JSON file, for single-host setups and local rehearsal.

The file holds ``{service: {target: weight}}``, which is easy for a proxy's reload script (or a
human) to read. Every change is a read-modify-write under an exclusive ``fcntl`` lock on a
sidecar ``PATH.lock`` file, written to a temporary file in the same directory, fsynced and moved
into place with ``os.replace``. A reader therefore never sees half-written JSON, needs no lock, and
two runs changing different services never lose each other's update.

Also registers ``memory://`` (runbook.routers.memory) so the two built-in routers come from one
plugin.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runbook.errors import ConfigError, RunbookError
from runbook.hookspecs import Provider, hookimpl
from runbook.routers.memory import MemoryRouter, active_of, check_weights, switched
from runbook.urls import redact_url


def path_of(url: str) -> Path:
    """``file:///abs/routes.json`` is absolute, ``file://routes.json`` relative to the cwd."""
    raw = url.removeprefix("file://")
    if not raw:
        raise ConfigError(f"router: {redact_url(url)}: has no path (file://PATH)")
    return Path(raw).expanduser()


class FileRouter:
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_of(url)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @classmethod
    def open(cls, url: str, **_: Any) -> FileRouter:
        return cls(url)

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, int]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RunbookError(f"router file {self.path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(table, dict) and all(isinstance(w, int) for w in table.values())
            for table in data.values()
        ):
            raise RunbookError(f"router file {self.path} must hold {{service: {{target: weight}}}}")
        return data

    def weights(self, service: str) -> dict[str, int]:
        return dict(self._read().get(service, {}))

    def active(self, service: str) -> str | None:
        return active_of(self.weights(service))

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _write(self, data: dict[str, dict[str, int]]) -> None:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        # The rename itself must survive a crash too.
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def set_weights(self, service: str, weights: dict[str, int]) -> None:
        table = check_weights(service, weights)
        with self._locked():
            data = self._read()
            data[service] = table
            self._write(data)

    def switch(self, service: str, to: str) -> None:
        with self._locked():
            data = self._read()
            data[service] = switched(data.get(service, {}), to)
            self._write(data)

    def __repr__(self) -> str:
        return f"FileRouter({self.url!r})"


@hookimpl
def runbook_routers() -> list[Provider]:
    return [
        Provider("file", FileRouter.open, "weights in a JSON file, replaced atomically", path_of),
        Provider("memory", MemoryRouter.open, "weights in memory (tests, rehearsal)"),
    ]
