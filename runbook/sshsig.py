"""SSHSIG (OpenSSH's PROTOCOL.sshsig) for ``ssh-ed25519`` keys, in this process.

Why: a signed gate paid two ``ssh-keygen`` processes (sign at approve, verify at resume), and
forking a Python process under load costs 10-30 ms each, most of a gate's budget. For the common
case, an unencrypted ed25519 key file and an ``allowed_signers`` entry without validity options,
the format is small and fixed, and Ed25519 is deterministic: the signature made here is byte for
byte the one ``ssh-keygen -Y sign`` makes, and the checks here are those of
``ssh-keygen -Y verify`` (magic, version 1, namespace, hash algorithm, key and signature type,
nothing trailing, the signature itself). Everything else (an ssh-agent key, a passphrase, FIDO
``sk-`` keys, RSA/ECDSA, ``valid-before``/``cert-authority`` options) stays with ``ssh-keygen``
(runbook.signing decides which). Needs the optional ``cryptography`` package; without it every
function here answers "not supported" and ``ssh-keygen`` does all the work.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

# ``cryptography``, imported by ``available()`` the first time a key or a signature is looked
# at: it costs ~10 ms, and every command that builds a Runner imports this module.
_ed25519: Any = None
_serialization: Any = None
_InvalidSignature: Any = None
_Unsupported: Any = None
_imported = False

MAGIC = b"SSHSIG"
VERSION = 1
ED25519 = b"ssh-ed25519"
HASHES = ("sha512", "sha256")
ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")
_LINE = 70  # ssh-keygen wraps the armored base64 at 70 columns


class Invalid(ValueError):
    """The signature does not verify (the reason in words, as ssh-keygen would say it)."""


def available() -> bool:
    """Whether ``cryptography`` is installed (imported here, once). Every function that uses it
    asks this first."""
    global _ed25519, _serialization, _InvalidSignature, _Unsupported, _imported
    if not _imported:
        _imported = True
        try:
            from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ed25519
        except ImportError:  # pragma: no cover - exercised by installs without cryptography
            return False
        _ed25519, _serialization = ed25519, serialization
        _InvalidSignature, _Unsupported = InvalidSignature, UnsupportedAlgorithm
    return _ed25519 is not None


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _strings(blob: bytes, count: int, offset: int = 0) -> tuple[list[bytes], int]:
    out = []
    for _ in range(count):
        if offset + 4 > len(blob):
            raise Invalid("truncated signature")
        (size,) = struct.unpack(">I", blob[offset : offset + 4])
        offset += 4
        if offset + size > len(blob):
            raise Invalid("truncated signature")
        out.append(blob[offset : offset + size])
        offset += size
    return out, offset


def _to_sign(namespace: str, hash_alg: str, message: bytes) -> bytes:
    digest = hashlib.new(hash_alg, message).digest()
    return (
        MAGIC
        + _string(namespace.encode())
        + _string(b"")
        + _string(hash_alg.encode())
        + (_string(digest))
    )


def _raw_ed25519(key_blob: bytes) -> bytes | None:
    """The 32 key bytes of an ``ssh-ed25519`` public key blob, or None for any other key."""
    try:
        (kind, raw), end = _strings(key_blob, 2)
    except Invalid:
        return None
    return raw if kind == ED25519 and len(raw) == 32 and end == len(key_blob) else None


def supports(key_blob: bytes) -> bool:
    """Whether this key's signatures can be made and checked here."""
    return available() and _raw_ed25519(key_blob) is not None


def unarmor(signature: str) -> bytes:
    text = signature.strip()
    if not (text.startswith(ARMOR[0]) and text.endswith(ARMOR[1])):
        raise Invalid("not an SSH signature")
    try:
        return base64.b64decode(
            "".join(text[len(ARMOR[0]) : -len(ARMOR[1])].split()), validate=True
        )
    except ValueError:
        raise Invalid("the signature is not valid base64") from None


def armor(blob: bytes) -> str:
    body = base64.b64encode(blob).decode()
    lines = [body[i : i + _LINE] for i in range(0, len(body), _LINE)]
    return "\n".join([ARMOR[0], *lines, ARMOR[1]])


def verify(signature: str, message: bytes, namespace: str, key_blob: bytes) -> None:
    """Check an armored SSHSIG over ``message`` by ``key_blob`` (ed25519); raise ``Invalid``."""
    raw = _raw_ed25519(key_blob)
    if raw is None or not available():
        raise Invalid("not an ed25519 key")
    blob = unarmor(signature)
    if blob[:6] != MAGIC:
        raise Invalid("invalid signature magic")
    if len(blob) < 10 or struct.unpack(">I", blob[6:10])[0] != VERSION:
        raise Invalid("unsupported signature version")
    (pubkey, ns, _reserved, hash_alg, sig), end = _strings(blob, 5, 10)
    if end != len(blob):
        raise Invalid("signature contains trailing data")
    if pubkey != key_blob:
        raise Invalid("the signature was made by another key")
    if ns.decode(errors="replace") != namespace:
        raise Invalid(f"signature namespace {ns.decode(errors='replace')!r} is not {namespace!r}")
    alg = hash_alg.decode(errors="replace")
    if alg not in HASHES:
        raise Invalid(f"unsupported hash algorithm {alg!r}")
    (kind, value), sig_end = _strings(sig, 2)
    if kind != ED25519 or len(value) != 64 or sig_end != len(sig):
        raise Invalid("not an ed25519 signature")
    try:
        _ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(
            value, _to_sign(ns.decode(), alg, message)
        )
    except _InvalidSignature:
        raise Invalid("Signature verification failed: incorrect signature") from None


def private_key(data: bytes) -> Any | None:
    """An unencrypted OpenSSH ed25519 private key from a key file's bytes, or None (encrypted,
    another type, a public key file for ssh-agent, not a key): ``ssh-keygen`` handles those."""
    if not available() or b"PRIVATE KEY" not in data:
        return None
    try:
        key = _serialization.load_ssh_private_key(data, password=None)
    except (TypeError, ValueError, _Unsupported):
        return None
    return key if isinstance(key, _ed25519.Ed25519PrivateKey) else None


def public_blob(key: Any) -> bytes:
    raw = key.public_key().public_bytes(
        _serialization.Encoding.Raw, _serialization.PublicFormat.Raw
    )
    return _string(ED25519) + _string(raw)


def sign(key: Any, message: bytes, namespace: str) -> str:
    """An armored SSHSIG, as ``ssh-keygen -Y sign -n NAMESPACE`` makes it (sha512)."""
    value = key.sign(_to_sign(namespace, "sha512", message))
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(public_blob(key))
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(ED25519) + _string(value))
    )
    return armor(blob)
