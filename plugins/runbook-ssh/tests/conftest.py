"""Four real OpenSSH servers (module-scoped), reset between tests; a project configured for them.

No SSH is mocked here. Without ``/usr/sbin/sshd`` the tests skip, except under ``CI=true`` where
they fail, so a CI machine without OpenSSH cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import sshd


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: spawns real processes")


@pytest.fixture(scope="module")
def servers() -> Iterator[sshd.Fleet]:
    if not sshd.available():
        message = f"{sshd.SSHD} not installed (Debian: openssh-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: a missing server fails instead of skipping)")
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="runbook-sshd-"))
    fleet = sshd.start_fleet(folder)
    try:
        yield fleet
    finally:
        fleet.stop()
        sshd.remove(folder)


@pytest.fixture
def fleet(servers: sshd.Fleet) -> sshd.Fleet:
    """The servers with empty state and the full known_hosts, whatever the last test did."""
    for server in servers.servers:
        shutil.rmtree(server.state, ignore_errors=True)
        server.state.mkdir()
    assert servers.known_hosts is not None
    servers.known_hosts.write_text("".join(s.known_hosts_line() + "\n" for s in servers.servers))
    return servers


@pytest.fixture
def project(tmp_path: Path, fleet: sshd.Fleet) -> Path:
    """A project whose runbook.toml points at the fleet: inventory, known_hosts, client key."""
    (tmp_path / "runbook.toml").write_text(
        textwrap.dedent(
            f"""
            inventory = "{fleet.inventory}"
            ssh_known_hosts = "{fleet.known_hosts}"
            ssh_identity_file = "{fleet.client_key}"
            ssh_connect_timeout = 3
            store = "sqlite:///.runbook/runbook.db"
            audit = ["jsonl://.runbook/audit.jsonl", "sqlite://"]
            lock = "memory://"
            """
        )
    )
    return tmp_path
