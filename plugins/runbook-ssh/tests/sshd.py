"""Real OpenSSH servers for the tests and the benchmark: ``/usr/sbin/sshd -D`` on 127.0.0.1.

Each server gets its own generated host key, config and port, ``UsePAM no``, ``StrictModes no``,
an ``AuthorizedKeysFile`` in the temporary folder, and a per-server state folder announced to
commands through ``SetEnv RB_HOST=... RB_STATE=...``, so a test can tell on which server a
command really ran. Servers are stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

SSHD = "/usr/sbin/sshd"

# What the "hosts" run: a tiny release tool whose state lives in the server's folder.
DEPLOYCTL = """#!/bin/sh
state="$RB_STATE"
echo "$1${2:+ $2}" >> "$state/log"
case "$1" in
  install)
    if [ -e "$state/fail-install" ]; then echo "install of $2 failed on $RB_HOST" >&2; exit 3; fi
    [ -e "$state/version" ] && cp "$state/version" "$state/previous"
    printf '%s\\n' "$2" > "$state/version"
    echo "installed $2 on $RB_HOST";;
  health)
    if [ -e "$state/unhealthy" ]; then echo "$RB_HOST unhealthy" >&2; exit 1; fi
    cat "$state/version";;
  rollback)
    if [ -e "$state/previous" ]; then mv "$state/previous" "$state/version"
    else rm -f "$state/version"; fi
    echo "rolled back $RB_HOST";;
  *) echo "usage: deployctl install VERSION | health | rollback" >&2; exit 2;;
esac
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available() -> bool:
    return os.path.exists(SSHD) and os.access(SSHD, os.X_OK)


@dataclass
class Server:
    name: str
    port: int
    folder: Path
    host_key: asyncssh.SSHKey
    proc: subprocess.Popen[bytes] | None = None

    @property
    def state(self) -> Path:
        return self.folder / "state"

    def known_hosts_line(self) -> str:
        key = self.host_key.export_public_key("openssh").decode().strip()
        return f"[127.0.0.1]:{self.port} {key}"

    def version(self) -> str | None:
        path = self.state / "version"
        return path.read_text().strip() if path.exists() else None

    def start(self, authorized_keys: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(exist_ok=True)
        key_path = self.folder / "ssh_host_ed25519_key"
        self.host_key.write_private_key(str(key_path))
        key_path.chmod(0o600)
        config = self.folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {key_path}",
                    f"PidFile {self.folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized_keys}",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "MaxSessions 32",
                    "MaxStartups 64",
                    f"SetEnv RB_HOST={self.name} RB_STATE={self.state}",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation (Debian)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"sshd for {self.name} exited: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd for {self.name} did not answer on port {self.port} within 10s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Fleet:
    """N servers sharing one client key; files a runbook project needs to reach them."""

    folder: Path
    servers: list[Server] = field(default_factory=list)
    client_key: Path | None = None
    known_hosts: Path | None = None
    inventory: Path | None = None
    deployctl: Path | None = None

    def by_name(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_fleet(folder: Path, count: int = 4, prefix: str = "web") -> Fleet:
    folder.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(folder)
    client = asyncssh.generate_private_key("ssh-ed25519")
    fleet.client_key = folder / "id_ed25519"
    client.write_private_key(str(fleet.client_key))
    fleet.client_key.chmod(0o600)
    authorized = folder / "authorized_keys"
    authorized.write_text(client.export_public_key("openssh").decode())
    fleet.deployctl = folder / "deployctl"
    fleet.deployctl.write_text(DEPLOYCTL)
    fleet.deployctl.chmod(0o755)
    try:
        for i in range(1, count + 1):
            server = Server(
                f"{prefix}-{i}",
                free_port(),
                folder / f"{prefix}-{i}",
                asyncssh.generate_private_key("ssh-ed25519"),
            )
            fleet.servers.append(server)
            server.start(authorized)
    except BaseException:
        fleet.stop()
        raise
    fleet.known_hosts = folder / "known_hosts"
    fleet.known_hosts.write_text("".join(s.known_hosts_line() + "\n" for s in fleet.servers))
    fleet.inventory = folder / "hosts.ini"
    lines = [f"[{prefix}]"] + [
        f"{s.name} ansible_host=127.0.0.1 ansible_port={s.port} ansible_user=root"
        for s in fleet.servers
    ]
    fleet.inventory.write_text("\n".join(lines) + "\n")
    return fleet


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
