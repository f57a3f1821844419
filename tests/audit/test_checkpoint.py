"""Signed checkpoints: keys, when they are written, what a run leaves, and what verify checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runbook import Runner
from runbook.audit.checkpoint import EVERY, CheckpointCheck, must_sign, payload
from runbook.audit.events import AuditEvent
from runbook.audit.log import AuditLog
from runbook.audit.memory import MemorySink
from runbook.audit.signing import load_public_key, load_signer
from runbook.audit.verify import verify_chain
from runbook.cli import cli
from runbook.errors import AuditError, ConfigError, StoreError
from runbook.store.memory import MemoryStore

from .conftest import make_event
from .trails import make_keys

pytest.importorskip("cryptography")

RUNBOOK = """
from runbook import step

@step
def stage():
    return "staged"

@step
def switch(stage):
    return stage + " and switched"
"""


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return make_keys(tmp_path)


def test_openssh_and_pem_keys_load_and_name_themselves_like_ssh_keygen(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub_pem = tmp_path / "key.pub.pem"
    pub_pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signer = load_signer(pem)
    assert load_public_key(pub_pem).fingerprint == signer.fingerprint
    assert signer.fingerprint.startswith("SHA256:") and "=" not in signer.fingerprint
    ssh_private, ssh_public = make_keys(tmp_path, "ssh")
    ssh_keygen = subprocess.run(
        ["ssh-keygen", "-lf", str(ssh_public)], capture_output=True, text=True, check=False
    )
    if ssh_keygen.returncode == 0:
        assert ssh_keygen.stdout.split()[1] == load_public_key(ssh_public).fingerprint
    assert load_signer(ssh_private).fingerprint == load_public_key(ssh_public).fingerprint


def test_signatures_verify_only_with_the_matching_key(keys, tmp_path: Path) -> None:
    signer = load_signer(keys[0])
    other = load_public_key(make_keys(tmp_path, "other")[1])
    signature = signer.sign(b"message")
    assert load_public_key(keys[1]).verifies(b"message", signature)
    assert not load_public_key(keys[1]).verifies(b"massage", signature)
    assert not other.verifies(b"message", signature)
    assert not load_public_key(keys[1]).verifies(b"message", "not base64!")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage", "not an OpenSSH or PEM private key"),
        (None, "cannot be read"),
    ],
)
def test_a_bad_private_key_is_one_config_error(tmp_path: Path, content, message) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_signer(path)


def test_encrypted_and_non_ed25519_keys_are_refused_with_the_reason(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    encrypted = tmp_path / "enc"
    encrypted.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(ConfigError, match="encrypted"):
        load_signer(encrypted)
    ecdsa = tmp_path / "ec"
    ecdsa.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="Ed25519"):
        load_signer(ecdsa)


def test_the_private_key_given_as_pubkey_says_so(keys) -> None:
    with pytest.raises(ConfigError, match=r"that is the private key: pass KEY\.pub"):
        load_public_key(keys[0])


def test_without_cryptography_the_error_names_the_extra(keys, monkeypatch) -> None:
    for name in list(sys.modules):
        if name.startswith("cryptography"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(ConfigError, match=r"pip install 'runbook\[audit-signing\]'"):
        load_signer(keys[0])
    with pytest.raises(ConfigError, match="cryptography"):
        Runner(audit_key=keys[0])
    result = CliRunner().invoke(
        cli, ["audit", "verify", "--sink", "memory://", "--pubkey", str(keys[1])]
    )
    assert result.exit_code == 2
    assert "runbook[audit-signing]" in result.output and "Traceback" not in result.output


def test_checkpoints_come_after_each_run_end_and_every_1000_events(keys) -> None:
    sink = MemorySink()
    log = AuditLog(sink, signer=load_signer(keys[0]))
    for i in range(2 * EVERY + 5):
        log.append(make_event(0, kind="step_started", run_id=f"r{i // 700}"))
    log.append(make_event(0, kind="run_finished", run_id="r2"))
    events = list(sink.events())
    checkpoints = [e for e in events if e.kind == "checkpoint"]
    assert [(c.seq, c.data["seq"]) for c in checkpoints] == [
        (1001, 1000),
        (2001, 2000),
        (2009, 2008),
    ]
    last = checkpoints[-1]
    assert last.run_id == "r2" and set(last.data) == {
        "seq",
        "hash",
        "count",
        "at",
        "key_fingerprint",
        "signature",
    }
    assert last.data["hash"] == events[2007].hash and last.data["count"] == 2008
    assert load_public_key(keys[1]).verifies(payload(last.data), last.data["signature"])
    check = CheckpointCheck([load_public_key(keys[1])])
    report = verify_chain(events, [check])
    assert report.ok, report
    assert "3 checkpoints signed by SHA256:" in str(report)


def test_must_sign_is_the_rule_both_sides_apply() -> None:
    assert must_sign(AuditEvent("run_finished", "r", seq=7))
    assert must_sign(AuditEvent("run_paused", "r", seq=7))
    assert must_sign(AuditEvent("run_cancelled", "r", seq=7))
    assert must_sign(AuditEvent("step_started", "r", seq=3000))
    assert not must_sign(AuditEvent("step_started", "r", seq=2999))
    assert not must_sign(AuditEvent("checkpoint", "r", seq=3000))


def test_an_unsigned_tail_of_a_running_run_is_reported_but_not_a_failure(keys) -> None:
    sink = MemorySink()
    log = AuditLog(sink, signer=load_signer(keys[0]))
    for i in range(10):
        log.append(make_event(i))  # ends with run_finished: a checkpoint at 11
    for i in range(3):
        log.append(make_event(i, run_id="running"))
    report = verify_chain(list(sink.events()), [CheckpointCheck([load_public_key(keys[1])])])
    assert report.ok
    assert "1 checkpoint signed by" in str(report)
    assert "(events 11..14 not signed yet)" in str(report)


def test_a_run_leaves_checkpoints_and_witnesses(tmp_path: Path, keys) -> None:
    book = tmp_path / "deploy.py"
    book.write_text(RUNBOOK)
    sink = MemorySink()
    store = MemoryStore()
    with Runner(audit=[sink], store=store, audit_key=keys[0]) as runner:
        result = runner.run(book)
    assert result.status == "succeeded"
    assert "checkpoint" not in [e.kind for e in result.audit]  # the run's own events only
    events = list(sink.events())
    assert [e.kind for e in events][-2:] == ["run_finished", "checkpoint"]
    assert events[-1].data["seq"] == events[-2].seq
    (witness,) = store.audit_witnesses()
    assert (witness.run_id, witness.seq, witness.hash) == (
        result.run_id,
        events[-1].seq,
        events[-1].hash,
    )
    assert witness.chain == "memory://"


def test_a_signing_failure_is_an_audit_error(keys) -> None:
    class Broken:
        fingerprint = "SHA256:x"

        def sign(self, message: bytes) -> str:
            raise RuntimeError("HSM offline")

    log = AuditLog(MemorySink(), signer=Broken())  # type: ignore[arg-type]
    with pytest.raises(AuditError, match=r"cannot sign a checkpoint for event 1: .*HSM offline"):
        log.append(make_event(9))  # run_finished


def test_a_witness_failure_is_an_audit_error() -> None:
    class DownStore:
        def witness_audit(self, *args: object) -> None:
            from runbook.errors import StoreError

            raise StoreError("database is locked")

    log = AuditLog(MemorySink(), store=DownStore())
    with pytest.raises(AuditError, match="event 1 is stored but the run store could not witness"):
        log.append(make_event(0))


def test_audit_key_in_the_config_is_anchored_at_the_project_root(tmp_path: Path) -> None:
    from runbook.config import load_config

    (tmp_path / "runbook.toml").write_text('audit_key = "keys/audit"\n')
    (tmp_path / "sub").mkdir()
    config = load_config(tmp_path / "sub")
    assert config.audit_key == str(tmp_path / "keys" / "audit")
    (tmp_path / "runbook.toml").write_text("audit_key = 3\n")
    with pytest.raises(ConfigError, match="audit_key: expected a path"):
        load_config(tmp_path)
    (tmp_path / "runbook.toml").write_text("")
    assert load_config(tmp_path).audit_key is None


def test_exec_with_a_configured_key_writes_verifiable_checkpoints(tmp_path: Path, keys) -> None:
    """The whole path as a user takes it: config, exec, verify --pubkey, head."""
    (tmp_path / "runbook.toml").write_text(f'audit_key = "{keys[0]}"\n')
    (tmp_path / "deploy.py").write_text(RUNBOOK)

    def runbook(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runbook", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert runbook("exec", "deploy.py").returncode == 0
    verified = runbook("audit", "verify", "--pubkey", str(keys[1]))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 checkpoint signed by SHA256:" in verified.stdout
    assert "the run store's witness of 1 run agrees" in verified.stdout
    head = runbook("audit", "head").stdout.splitlines()
    assert head[1].startswith(f"checkpoint {head[0]} covers ")
    assert runbook("audit", "verify", "--expect-head", head[0]).returncode == 0


def test_a_feed_is_signed_but_not_witnessed(keys) -> None:
    """A logging:// chain restarts per process and cannot be read back: no witness rows."""
    import logging

    from runbook.audit.query import open_sink

    logger = logging.getLogger("runbook.test.feed")
    logger.addHandler(logging.NullHandler())
    logger.setLevel(logging.INFO)
    store = MemoryStore()
    feed = AuditLog(
        open_sink("logging://runbook.test.feed"), store=store, signer=load_signer(keys[0])
    )
    assert feed.append(make_event(9)).seq == 1  # run_finished: a checkpoint follows
    assert store.audit_witnesses() == []


def test_pending_witnesses_are_written_for_the_runs_asked_and_kept_for_the_others() -> None:
    """One log, two runs' events in one append (runs started together): a run's commit writes
    its own witness and leaves the other's due, so one run's refused witness cannot refuse
    another run's commits."""
    store = MemoryStore()
    log = AuditLog(MemorySink(), store=store)
    log.append_many([make_event(0, run_id="a"), make_event(1, run_id="b")])
    assert set(log.pending) == {"a", "b"}
    log.write_pending(store, ["a"])
    assert set(log.pending) == {"b"}
    assert store.audit_witness("a", log.chain_id) is not None
    assert store.audit_witness("b", log.chain_id) is None
    log.write_pending(store, ["a"])  # nothing of a's is due: nothing written, b's kept
    assert set(log.pending) == {"b"}
    log.write_pending(store)
    assert log.pending == {}
    witness = store.audit_witness("b", log.chain_id)
    assert witness is not None and witness.seq == 2


def test_a_witness_the_store_refuses_stays_due_with_those_after_it() -> None:
    """A store without transactions keeps the witnesses written before a refused one; the
    refused one and those after it are written by the next commit, not lost."""

    class Refusing(MemoryStore):
        refuse = {"b"}

        def witness_audit(self, run_id: str, chain: str, seq: int, hash: str) -> None:
            if run_id in self.refuse:
                raise StoreError("witness table is read-only")
            super().witness_audit(run_id, chain, seq, hash)

    store = Refusing()
    log = AuditLog(MemorySink(), store=store)
    log.append_many([make_event(i, run_id=run) for i, run in enumerate("abc")])
    with pytest.raises(AuditError, match="event 2 is stored but the run store could not"):
        log.write_pending(store)
    assert store.audit_witness("a", log.chain_id) is not None
    assert set(log.pending) == {"b", "c"}
    store.refuse = set()
    log.write_pending(store, ["b", "c"])
    assert log.pending == {}
    assert [store.audit_witness(run, log.chain_id).seq for run in "bc"] == [2, 3]  # type: ignore[union-attr]
