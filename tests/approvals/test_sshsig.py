"""In-process SSHSIG for ed25519 (runbook.sshsig) agrees with ``ssh-keygen -Y`` both ways.

Real keys made by ``ssh-keygen``; every verdict here is compared with what ``ssh-keygen`` itself
says about the same bytes, so the fast path cannot drift from the reference implementation.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runbook import signing, sshsig

from .conftest import Keys, keygen, signers_line

pytestmark = pytest.mark.skipif(not sshsig.available(), reason="needs cryptography")

MESSAGE = signing.payload(
    run_id="r1", step="switch", decision="granted", plan_hash="a" * 64, actor="bob", at="2030"
)


def keygen_sign(key: Path, message: bytes) -> str:
    done = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "runbook", "-f", str(key)],
        input=message,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return done.stdout.decode().strip()


def keygen_verifies(tmp: Path, signers: Path, who: str, message: bytes, signature: str) -> bool:
    sig = tmp / "m.sig"
    sig.write_text(signature + "\n")
    args = ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", who, "-n", "runbook"]
    done = subprocess.run(
        [*args, "-s", str(sig)], input=message, capture_output=True, check=False, timeout=30
    )
    return done.returncode == 0


def test_a_signature_made_here_is_the_one_ssh_keygen_makes(keys: Keys) -> None:
    ours = signing.sign(MESSAGE, keys.private("bob"))
    assert ours == keygen_sign(keys.private("bob"), MESSAGE)  # ed25519 is deterministic


def test_verdicts_agree_with_ssh_keygen(keys: Keys, tmp_path: Path) -> None:
    good = keygen_sign(keys.private("bob"), MESSAGE)
    blob = signing.public_key_blob(keys.public("bob"))
    sshsig.verify(good, MESSAGE, "runbook", blob)
    assert signing.verify(MESSAGE, good, keys.signers, claimed="bob", at=None).signer == "bob"

    tampered = MESSAGE.replace(b'"bob"', b'"eve"')
    assert not keygen_verifies(tmp_path, keys.signers, "bob", tampered, good)
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify(tampered, good, keys.signers, claimed="bob", at=None)

    other_ns = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "git", "-f", str(keys.private("bob"))],
        input=MESSAGE,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    assert not keygen_verifies(tmp_path, keys.signers, "bob", MESSAGE, other_ns)
    with pytest.raises(sshsig.Invalid, match="namespace"):
        sshsig.verify(other_ns, MESSAGE, "runbook", blob)

    # A signature whose bytes were altered (the last byte of the Ed25519 value).
    raw = bytearray(sshsig.unarmor(good))
    raw[-1] ^= 1
    forged = sshsig.armor(bytes(raw))
    assert not keygen_verifies(tmp_path, keys.signers, "bob", MESSAGE, forged)
    with pytest.raises(sshsig.Invalid, match="incorrect signature"):
        sshsig.verify(forged, MESSAGE, "runbook", blob)
    with pytest.raises(sshsig.Invalid, match="another key"):
        sshsig.verify(good, MESSAGE, "runbook", signing.public_key_blob(keys.public("carol")))


def test_options_only_ssh_keygen_judges_go_to_ssh_keygen(keys: Keys, tmp_path: Path) -> None:
    """``valid-before`` in the past: the in-process path must not accept what ssh-keygen
    refuses."""
    keytype, key = keys.public("bob").read_text().split()[:2]
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'bob namespaces="runbook",valid-before="20000101" {keytype} {key}\n')
    good = keygen_sign(keys.private("bob"), MESSAGE)
    assert not keygen_verifies(tmp_path, signers, "bob", MESSAGE, good)
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify(MESSAGE, good, signers, claimed="bob", at=None)


def test_an_encrypted_key_is_signed_by_ssh_keygen(tmp_path: Path) -> None:
    key = tmp_path / "dan"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-C", "dan", "-f", str(key)],
        check=True,
        timeout=30,
    )
    assert sshsig.private_key(key.read_bytes()) is None  # not ours to unlock
    assert sshsig.private_key(Path(f"{key}.pub").read_bytes()) is None  # an agent key


def test_an_edited_allowed_signers_file_is_read_again(keys: Keys, tmp_path: Path) -> None:
    signers = tmp_path / "allowed_signers"
    signers.write_text(signers_line("bob", keys.public("bob")))
    assert [e.principals for e in signing.read_signers(signers)] == [("bob",)]
    keygen(tmp_path, "erin")
    signers.write_text(
        signers_line("bob", keys.public("bob")) + signers_line("erin", tmp_path / "erin.pub")
    )
    assert [e.principals for e in signing.read_signers(signers)] == [("bob",), ("erin",)]


def test_a_key_file_without_its_pub_is_read_here(keys: Keys, tmp_path: Path) -> None:
    lone = tmp_path / "bob_key"
    lone.write_bytes(keys.private("bob").read_bytes())
    lone.chmod(0o600)
    assert signing.public_key_blob(lone) == signing.public_key_blob(keys.public("bob"))
    signed = signing.sign_as(lambda who: MESSAGE, lone, keys.signers, None)
    assert signed.signer == "bob"
    assert keygen_verifies(tmp_path, keys.signers, "bob", MESSAGE, signed.signature)
