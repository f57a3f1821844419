"""One SSH connection per host per run, on an event loop of its own.

The pool's loop runs in a thread owned by the run's ``ssh`` resource, so a sync step (in a worker
thread), an ``async def`` step (on the engine's loop) and a strategy callback all reach the same
connections, and a connection never outlives its run. Concurrent first commands to a host share
one connect; commands on one connection are bounded by ``max_sessions`` (sshd refuses more
channels than its ``MaxSessions``).

Host keys are checked against ``known_hosts``: an unknown key is refused unless
``ssh_accept_new = true``, which trusts it once and appends it to the file (OpenSSH's
``StrictHostKeyChecking=accept-new``); a *changed* key is always refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from runbook.errors import HostUnreachable
from runbook_ssh.settings import Settings

T = TypeVar("T")


class UnknownHostKey(HostUnreachable):
    """The host's key is not in known_hosts (and ssh_accept_new is off), or it changed."""


class LoopThread:
    """An asyncio loop in a daemon thread; ``run(coro)`` from any thread, ``arun`` from a loop."""

    def __init__(self, name: str = "runbook-ssh") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()


class _Entry:
    def __init__(self, max_sessions: int) -> None:
        self.lock = asyncio.Lock()
        self.sessions = asyncio.Semaphore(max_sessions)
        self.conn: asyncssh.SSHClientConnection | None = None


class Pool:
    """Connections by ``(user, address, port)``; every coroutine here runs on the pool's loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._entries: dict[tuple[str, str, int], _Entry] = {}
        self.connects = 0  # how many connections were opened (tests and the bench read it)

    def _entry(self, key: tuple[str, str, int]) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(self.settings.max_sessions)
        return entry

    async def session(self, host: Any) -> tuple[asyncssh.SSHClientConnection, asyncio.Semaphore]:
        user = self.settings.user_for(host)
        key = (user, host.address, host.port)
        entry = self._entry(key)
        async with entry.lock:
            if entry.conn is None or entry.conn.is_closed():
                entry.conn = await self._connect(host, user)
                self.connects += 1
        return entry.conn, entry.sessions

    def forget(self, host: Any) -> None:
        """Drop a host's connection after it broke, so the next command reconnects."""
        key = (self.settings.user_for(host), host.address, host.port)
        entry = self._entries.get(key)
        if entry is not None and entry.conn is not None:
            entry.conn.close()
            entry.conn = None

    async def _connect(self, host: Any, user: str) -> asyncssh.SSHClientConnection:
        s = self.settings
        where = f"{user}@{host.address}:{host.port}"
        known = self._known_hosts()
        unknown = known is None or not _has_key(known, host)
        if unknown and not s.accept_new:
            raise UnknownHostKey(
                host.name,
                f"host key of {host.address}:{host.port} is not in {s.known_hosts}: refusing to "
                "connect (check the key and add it, or set ssh_accept_new = true to trust a new "
                "host on first use)",
            )
        identity = s.identity_for(host)
        options: dict[str, Any] = {
            "host": host.address,
            "port": host.port,
            "username": user,
            "known_hosts": None if unknown else known,
            "connect_timeout": s.connect_timeout,
            "login_timeout": s.connect_timeout,
        }
        if identity is not None:
            options.update(client_keys=[str(identity)], agent_path=None)
        try:
            conn = await asyncssh.connect(**options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise UnknownHostKey(
                host.name,
                f"host key of {host.address}:{host.port} does not match {s.known_hosts}: "
                f"refusing to connect (it changed, or someone is in the middle): {exc.reason}",
            ) from None
        except asyncssh.PermissionDenied:
            how = f"key {identity}" if identity else "ssh-agent or ~/.ssh keys"
            raise HostUnreachable(host.name, f"authentication failed for {where} ({how})") from None
        except TimeoutError:
            raise HostUnreachable(
                host.name,
                f"no SSH session with {where} within {s.connect_timeout:g}s (ssh_connect_timeout)",
            ) from None
        except OSError as exc:
            raise HostUnreachable(
                host.name, f"cannot connect to {where}: {exc.strerror or exc}"
            ) from None
        except asyncssh.Error as exc:
            raise HostUnreachable(host.name, f"SSH to {where} failed: {exc.reason}") from None
        if unknown:
            self._remember(host, conn)
        return conn

    def _known_hosts(self) -> Any:
        path = self.settings.known_hosts
        if not path.is_file():
            return None
        return asyncssh.read_known_hosts(str(path))

    def _remember(self, host: Any, conn: asyncssh.SSHClientConnection) -> None:
        """Trust on first use: append the key the host showed, as OpenSSH writes it."""
        key = conn.get_server_host_key()
        if key is None:
            return
        name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        line = f"{name} {key.export_public_key('openssh').decode().strip()}\n"
        path: Path = self.settings.known_hosts
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as out:
            out.write(line)

    async def aclose(self) -> None:
        conns = [e.conn for e in self._entries.values() if e.conn is not None]
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)
        self._entries.clear()


def _has_key(known: Any, host: Any) -> bool:
    host_keys, ca_keys, *_ = known.match(host.address, host.address, host.port)
    return bool(host_keys or ca_keys)
