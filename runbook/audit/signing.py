"""Ed25519 keys for signed checkpoints, through the ``cryptography`` package (an optional extra).

The private key (``audit_key``) is an OpenSSH key (``ssh-keygen -t ed25519``) or a PEM PKCS#8
key (``openssl genpkey -algorithm ed25519``). The public key given to ``audit verify --pubkey``
is the matching ``.pub`` line or a PEM public key. A key is named by its OpenSSH fingerprint
(``SHA256:...``, what ``ssh-keygen -lf KEY.pub`` prints), so an auditor can tell which key signed
a checkpoint without trusting anything the trail says about it.

Core depends only on click, pluggy and httpx: ``cryptography`` is imported when a key is loaded,
and its absence is one clear error naming the extra to install.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook.errors import ConfigError

INSTALL_HINT = "pip install 'runbook[audit-signing]'"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError(
            "signed audit checkpoints need the 'cryptography' package, which is not "
            f"installed: {INSTALL_HINT}"
        ) from None
    return serialization, ed25519


def fingerprint(public_key: Any) -> str:
    """OpenSSH's ``SHA256:<base64>`` fingerprint of an Ed25519 public key."""
    serialization, _ = _crypto()
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    blob = base64.b64decode(line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


@dataclass(frozen=True)
class Signer:
    """A loaded private key: ``sign`` returns a base64 Ed25519 signature."""

    key: Any
    fingerprint: str
    path: str

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.key.sign(message)).decode()


@dataclass(frozen=True)
class PublicKey:
    key: Any
    fingerprint: str
    path: str

    def verifies(self, message: bytes, signature: str) -> bool:
        try:
            raw = base64.b64decode(signature, validate=True)
            self.key.verify(raw, message)
        except Exception:  # InvalidSignature, a malformed signature: either way, not valid
            return False
        return True


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None


def load_signer(path: str | Path) -> Signer:
    """The ``audit_key`` private key; ``ConfigError`` (exit 2) if it is not an Ed25519 key."""
    serialization, ed25519 = _crypto()
    data = _read(path, "audit_key")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"audit_key {path}: the key is encrypted; runbook signs unattended, so give it a "
            "key without a passphrase and protect the file instead (chmod 600)"
        ) from None
    except Exception as exc:  # ValueError, UnsupportedAlgorithm: either way not a key
        if "bcrypt" in str(exc):  # an encrypted OpenSSH key needs bcrypt just to be opened
            raise ConfigError(
                f"audit_key {path}: the key is encrypted; give runbook a key without a "
                "passphrase and protect the file instead (chmod 600)"
            ) from None
        raise ConfigError(
            f"audit_key {path}: not an OpenSSH or PEM private key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(
            f"audit_key {path}: a {type(key).__name__.removesuffix('PrivateKey')} key; "
            "checkpoints are signed with Ed25519 (ssh-keygen -t ed25519)"
        )
    return Signer(key, fingerprint(key.public_key()), str(path))


def load_public_key(path: str | Path) -> PublicKey:
    """A ``--pubkey`` file: an ``ssh-ed25519 AAAA...`` line or a PEM public key."""
    serialization, ed25519 = _crypto()
    data = _read(path, "public key")
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except Exception as exc:
        hint = " (that is the private key: pass KEY.pub)" if b"PRIVATE KEY" in data else ""
        raise ConfigError(
            f"public key {path}: not an OpenSSH or PEM public key ({type(exc).__name__}){hint}"
        ) from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"public key {path}: not an Ed25519 key (ssh-keygen -t ed25519)")
    return PublicKey(key, fingerprint(key), str(path))
