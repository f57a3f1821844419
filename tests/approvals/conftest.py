"""Three people with real ssh-keygen ed25519 keys, and a project whose prod env demands them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from runbook.cli import cli

PEOPLE = ("alice", "bob", "carol")

CONFIG = """
store = "sqlite:///.runbook/runbook.db"
audit = ["jsonl://.runbook/audit.jsonl"]
lock = "file://.runbook/locks"

[groups]
dba = ["carol"]
sre = ["bob", "Alice"]

[env.prod]
protection = "strict"
signers = "allowed_signers"
approvers = ["alice", "bob", "carol"]

[env.stage]
protection = "standard"

[env.claimed]
protection = "strict"
"""

RUNBOOK = """
from pathlib import Path
from runbook import Approval, probe, step

HERE = Path(__file__).parent


def _log(name):
    with open(HERE / "journal.txt", "a") as f:
        f.write(name + "\\n")


@probe
def replicas():
    return int((HERE / "replicas.txt").read_text())


@step
def prepare():
    _log("prepare")


@step(approval=GATE)
def switch(prepare, replicas):
    _log("switch")
    return replicas
"""


@dataclass(frozen=True)
class Keys:
    folder: Path
    signers: Path

    def private(self, who: str) -> Path:
        return self.folder / who

    def public(self, who: str) -> Path:
        return self.folder / f"{who}.pub"


def keygen(folder: Path, who: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(folder / who)],
        check=True,
        timeout=30,
    )


def signers_line(principal: str, pub: Path) -> str:
    keytype, key = pub.read_text().split()[:2]
    return f'{principal} namespaces="runbook" {keytype} {key}\n'


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    for who in (*PEOPLE, "mallory"):  # mallory's key is in no allowed_signers file
        keygen(folder, who)
    signers = folder / "allowed_signers"
    signers.write_text("".join(signers_line(p, folder / f"{p}.pub") for p in PEOPLE))
    return Keys(folder, signers)


@dataclass
class Project:
    root: Path
    keys: Keys
    cli: CliRunner

    def write(self, gate: str = "Approval(allow_self=False)", source: str = RUNBOOK) -> Path:
        path = self.root / "deploy.py"
        path.write_text(source.replace("GATE", gate))
        return path

    def invoke(self, *args: Any, actor: str | None = None) -> Result:
        env = {"RUNBOOK_ACTOR": actor, "RUNBOOK_SIGNING_KEY": None}
        return self.cli.invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)

    def start(self, actor: str = "alice", env: str = "prod", *extra: str) -> str:
        done = self.invoke("exec", "deploy.py", "--env", env, "--json", *extra, actor=actor)
        assert done.exit_code == 3, done.output
        return json.loads(done.stdout)["run_id"]

    def approve(self, run_id: str, who: str, *extra: str, key: str | None = None) -> Result:
        sign = ["--sign", self.keys.private(key or who)] if (key or who) else []
        return self.invoke("approve", run_id, *sign, *extra, actor=who)

    def resume(self, run_id: str, actor: str = "alice", *extra: str) -> Result:
        return self.invoke("resume", run_id, "--json", *extra, actor=actor)

    def events(self, kind: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        path = self.root / ".runbook" / "audit.jsonl"
        if not path.exists():
            return []
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [
            e
            for e in events
            if (kind is None or e["kind"] == kind) and (run_id is None or e["run_id"] == run_id)
        ]

    @property
    def journal(self) -> list[str]:
        path = self.root / "journal.txt"
        return path.read_text().splitlines() if path.exists() else []

    def set_replicas(self, n: int) -> None:
        (self.root / "replicas.txt").write_text(str(n))


@pytest.fixture
def project(tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    for var in ("RUNBOOK_STORE", "RUNBOOK_CONFIG", "RUNBOOK_DEBUG", "RUNBOOK_SIGNING_KEY"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "runbook.toml").write_text(CONFIG)
    (tmp_path / "allowed_signers").write_text(keys.signers.read_text())
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path, keys, CliRunner())
    project.set_replicas(3)
    project.write()
    yield project


Invoke = Callable[..., Result]
