"""Proven identity: SSHSIG signatures, made and checked with ``ssh-keygen -Y`` semantics.

Why OpenSSH's ``ssh-keygen`` binary: it *is* the reference implementation of the SSHSIG format
(a signature made here verifies with ``ssh-keygen -Y verify`` and the other way round), it
already speaks to ``ssh-agent`` and FIDO (``sk-ssh-ed25519``) keys, prompts for passphrases on
the terminal, and honours every ``allowed_signers`` option (``namespaces``,
``valid-after``/``valid-before``, ``cert-authority``). Why not only the binary: a process per
signature costs 10-30 ms under load, two per signed gate. So the common case, an unencrypted
ed25519 key file and an entry with no option but ``namespaces``, is signed and verified in this
process (runbook.sshsig, with the optional ``cryptography`` package: the same bytes, the same
checks); everything else goes to ``ssh-keygen``. Core needs no cryptography dependency.

The signed message is the canonical JSON of ``{"run_id", "step", "decision", "plan_hash",
"actor", "at"}`` (:func:`payload`), in the ``runbook`` namespace: a signature binds one decision
on one gate of one run for one plan, so it cannot be replayed anywhere else.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runbook import sshsig
from runbook.errors import ApprovalError
from runbook.identity import normalize

NAMESPACE = "runbook"
SIGNING_KEY_ENV = "RUNBOOK_SIGNING_KEY"
TIMEOUT = 60.0  # a passphrase or a FIDO touch may take a moment; never hang forever
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")


class SignatureError(ApprovalError):
    """A decision could not be signed, or its signature does not prove who made it."""


@dataclass(frozen=True)
class Signed:
    """A verified signature: who it proves (a principal of ``allowed_signers``) and with what."""

    signature: str  # the armored SSHSIG text, kept in the audit event
    signer: str  # the principal, exactly as the allowed_signers file spells it
    key_fingerprint: str  # SHA256:... of the public key, as ssh-keygen prints it


def payload(*, run_id: str, step: str, decision: str, plan_hash: str, actor: str, at: str) -> bytes:
    """The bytes that are signed: canonical JSON (sorted keys, no spaces, UTF-8)."""
    body = {
        "run_id": run_id,
        "step": step,
        "decision": decision,
        "plan_hash": plan_hash,
        "actor": actor,
        "at": at,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if not found:
        raise SignatureError(
            "signed decisions need OpenSSH's ssh-keygen (Debian/Ubuntu: apt install openssh-client)"
        )
    return found


def _run(args: list[str], message: bytes, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [_ssh_keygen(), *args],
            input=message,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SignatureError(f"{what}: ssh-keygen did not answer within {TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise SignatureError(f"{what}: cannot run ssh-keygen: {exc}") from None


def _first_error(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = [ln.strip() for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"ssh-keygen exited {done.returncode}"


def sign(message: bytes, key: str | Path) -> str:
    """Sign with a private key file, or a public key file whose private half is in ssh-agent.

    An unencrypted ed25519 key file is signed with in this process (runbook.sshsig: the same
    bytes ``ssh-keygen -Y sign`` writes); any other key goes through ``ssh-keygen``."""
    path = Path(key).expanduser()
    if not path.is_file():
        raise SignatureError(f"signing key {path} does not exist")
    if sshsig.available():
        try:
            private = sshsig.private_key(path.read_bytes())
        except OSError:
            private = None  # unreadable here: ssh-keygen says why
        if private is not None:
            return sshsig.sign(private, message, NAMESPACE)
    done = _run(["-Y", "sign", "-n", NAMESPACE, "-f", str(path)], message, f"sign with {path}")
    if done.returncode != 0 or not done.stdout.startswith(_ARMOR[0].encode()):
        raise SignatureError(f"cannot sign with {path}: {_first_error(done)}")
    return done.stdout.decode().strip()


def public_key_blob(key: str | Path) -> bytes:
    """The public key of a signing key: its ``.pub`` file, or derived by ``ssh-keygen -y``."""
    path = Path(key).expanduser()
    candidates = [path] if path.suffix == ".pub" else [Path(f"{path}.pub")]
    for candidate in candidates:
        if candidate.is_file():
            try:
                fields = candidate.read_text(encoding="utf-8").split()
                return base64.b64decode(fields[1], validate=True)
            except (OSError, IndexError, ValueError):
                raise SignatureError(f"{candidate} is not an OpenSSH public key") from None
    if not path.is_file():
        raise SignatureError(f"signing key {path} does not exist")
    if sshsig.available():
        try:
            private = sshsig.private_key(path.read_bytes())
        except OSError:
            private = None
        if private is not None:  # an unencrypted ed25519 key: its public half, no process
            return sshsig.public_blob(private)
    done = _run(["-y", "-f", str(path)], b"", f"read the public key of {path}")
    if done.returncode != 0:
        raise SignatureError(f"cannot read the public key of {path}: {_first_error(done)}")
    try:
        return base64.b64decode(done.stdout.split()[1], validate=True)
    except (IndexError, ValueError):
        raise SignatureError(f"cannot read the public key of {path}") from None


def sign_as(
    message_for: Callable[[str], bytes], key: str | Path, signers: Path, claimed: str | None
) -> Signed:
    """Sign a decision as the principal ``signers`` lists for ``key``.

    ``message_for(principal)`` builds the payload (the actor is in it). A ``claimed`` name that
    is not that principal is refused before anything is signed. The new signature is checked to
    carry the key that was looked up (a ``.pub`` next to another private key is caught here);
    when the key's allowed_signers entry has options only ssh-keygen can judge
    (``valid-before``, ``cert-authority``...) it is verified in full right away. Either way it is
    verified in full again each time it is used (resume) and by ``audit verify --signers``.
    """
    blob = public_key_blob(key)
    entries = read_signers(signers)
    principal = _principal(entries, blob, claimed, signers)
    if claimed and normalize(claimed) != normalize(principal):
        raise SignatureError(
            f"the key {key} is {principal}'s in {signers}; --as {claimed} disagrees"
        )
    message = message_for(principal)
    signature = sign(message, key)
    if signature_key(signature)[0] != blob:
        raise SignatureError(f"{key} did not sign with the key of its public half")
    if any(e.other_options for e in entries if e.key_blob == blob):
        return verify(message, signature, signers, claimed=principal, at=None)
    return Signed(signature, principal, fingerprint(blob))


def principal_of(key_blob: bytes, signers: Path, claimed: str | None) -> str:
    """The principal ``signers`` lists for this key (``claimed`` picks one of several)."""
    return _principal(read_signers(signers), key_blob, claimed, signers)


# -- reading a signature and an allowed_signers file ---------------------------------------------


def _strings(blob: bytes, count: int, offset: int = 0) -> tuple[list[bytes], int]:
    out = []
    for _ in range(count):
        if offset + 4 > len(blob):
            raise ValueError("truncated")
        (size,) = struct.unpack(">I", blob[offset : offset + 4])
        offset += 4
        if offset + size > len(blob):
            raise ValueError("truncated")
        out.append(blob[offset : offset + size])
        offset += size
    return out, offset


def signature_key(signature: str) -> tuple[bytes, str]:
    """The public key blob inside an armored SSHSIG and its namespace (not a verification)."""
    text = signature.strip()
    if not (text.startswith(_ARMOR[0]) and text.endswith(_ARMOR[1])):
        raise SignatureError("not an SSH signature (expected -----BEGIN SSH SIGNATURE-----)")
    body = "".join(text[len(_ARMOR[0]) : -len(_ARMOR[1])].split())
    try:
        blob = base64.b64decode(body, validate=True)
        if blob[:6] != b"SSHSIG":
            raise ValueError("no SSHSIG magic")
        (pubkey, namespace), _ = _strings(blob, 2, 10)  # magic (6) + version (4)
    except (ValueError, struct.error) as exc:
        raise SignatureError(f"malformed SSH signature ({exc})") from None
    return pubkey, namespace.decode(errors="replace")


def fingerprint(key_blob: bytes) -> str:
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class SignerEntry:
    principals: tuple[str, ...]  # patterns, as written
    namespaces: tuple[str, ...] | None  # None: any namespace
    key_blob: bytes
    # valid-after, valid-before, cert-authority...: only ssh-keygen can decide those.
    other_options: bool = False

    def matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(normalize(name), normalize(p)) for p in self.principals)


_SIGNERS: dict[Path, tuple[tuple[int, int, int], list[SignerEntry]]] = {}


def read_signers(path: Path) -> list[SignerEntry]:
    """The entries of an ``allowed_signers`` file (see ssh-keygen(1), ALLOWED SIGNERS).

    Parsed once per version of the file (its inode, size and mtime): a gate reads it at approve,
    at every resume and per decision in ``audit verify``; an edit is seen at the next read."""
    try:
        st = path.stat()
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _SIGNERS.get(path)
        if cached is not None and cached[0] == version:
            return list(cached[1])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SignatureError(f"cannot read allowed signers file {path}: {exc}") from None
    entries = _parse_signers(path, text)
    _SIGNERS[path] = (version, entries)
    return list(entries)


def _parse_signers(path: Path, text: str) -> list[SignerEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(_entry(line))
        except ValueError as exc:
            raise SignatureError(f"{path}:{number}: {exc}") from None
    return entries


def _split(text: str, sep: str | None) -> list[str]:
    """Split on ``sep`` (None: whitespace) outside double quotes, keeping the quotes."""
    out, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        is_sep = char.isspace() if sep is None else char == sep
        if is_sep and not quoted:
            if current:
                out.append(current)
            current = ""
            continue
        current += char
    if quoted:
        raise ValueError("unbalanced quotes")
    if current:
        out.append(current)
    return out


def _entry(line: str) -> SignerEntry:
    fields = _split(line, None)
    if len(fields) < 3:
        raise ValueError("expected: principals [options] keytype base64-key")
    principals = tuple(p for p in fields[0].strip('"').split(",") if p)
    rest = fields[1:]
    namespaces: tuple[str, ...] | None = None
    other = False
    if not rest[0].startswith(("ssh-", "ecdsa-", "sk-")):
        for option in _split(rest[0], ","):
            name, _, value = option.partition("=")
            if name.lower() == "namespaces":
                namespaces = tuple(v for v in value.strip('"').split(",") if v)
            else:
                other = True
        rest = rest[1:]
    if len(rest) < 2:
        raise ValueError("missing key type or key")
    try:
        blob = base64.b64decode(rest[1], validate=True)
    except ValueError:
        raise ValueError("the key is not valid base64") from None
    return SignerEntry(principals, namespaces, blob, other)


# -- verification -------------------------------------------------------------------------------


def _ssh_time(at: str) -> str | None:
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return None
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return when.strftime("%Y%m%d%H%M%SZ")


def _principal(entries: list[SignerEntry], blob: bytes, claimed: str | None, path: Path) -> str:
    listed = [e for e in entries if e.key_blob == blob]
    listed = [e for e in listed if e.namespaces is None or NAMESPACE in e.namespaces]
    if not listed:
        raise SignatureError(
            f"the key {fingerprint(blob)} is not in {path} for namespace {NAMESPACE!r}"
        )
    concrete = [p for e in listed for p in e.principals if not any(c in p for c in "*?")]
    if claimed:
        for name in concrete:
            if normalize(name) == normalize(claimed):
                return name
        if any(e.matches(claimed) for e in listed):
            return claimed
        return concrete[0] if len(concrete) == 1 else ", ".join(concrete) or "(a pattern)"
    if len(concrete) == 1:
        return concrete[0]
    raise SignatureError(
        f"the key {fingerprint(blob)} is listed in {path} for "
        f"{', '.join(concrete) or 'a pattern only'}: say which with --as"
    )


def _judged_here(entries: list[SignerEntry], blob: bytes, principal: str) -> bool:
    """Whether ``ssh-keygen -Y verify -I principal`` would decide on nothing but the namespace and
    the signature, so runbook.sshsig may decide instead: an ed25519 key whose entries for this
    principal carry no option but ``namespaces`` and no negated or wildcard principal."""
    if not sshsig.supports(blob):
        return False
    mine = [e for e in entries if e.key_blob == blob]
    if any(e.other_options or any(p.startswith("!") for p in e.principals) for e in mine):
        return False
    return any(
        principal in e.principals and (e.namespaces is None or NAMESPACE in e.namespaces)
        for e in mine
    )


def verify(
    message: bytes, signature: str, signers: Path, *, claimed: str | None, at: str | None
) -> Signed:
    """Prove who signed ``message``: the principal of ``signers`` whose key made ``signature``.

    The principal is looked up by the key inside the signature; ``ssh-keygen -Y verify`` then
    decides (namespace, key validity at ``at``, the signature itself). A ``claimed`` name that is
    not that principal is refused, so a colleague's name cannot be typed over one's own key.
    """
    blob, namespace = signature_key(signature)
    if namespace != NAMESPACE:
        raise SignatureError(f"signature is for namespace {namespace!r}, not {NAMESPACE!r}")
    entries = read_signers(signers)
    principal = _principal(entries, blob, claimed, signers)
    if claimed and normalize(claimed) != normalize(principal):
        raise SignatureError(
            f"the signature is by {principal} ({fingerprint(blob)}), not by {claimed}"
        )
    if _judged_here(entries, blob, principal):
        try:
            sshsig.verify(signature, message, NAMESPACE, blob)
        except sshsig.Invalid as exc:
            raise SignatureError(
                f"signature does not verify for {principal} against {signers}: {exc}"
            ) from None
        return Signed(signature.strip(), principal, fingerprint(blob))
    fd, sig_path = tempfile.mkstemp(prefix="runbook-sig-", suffix=".sig")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(signature.strip() + "\n")
        args = ["-Y", "verify", "-f", str(signers), "-I", principal, "-n", NAMESPACE]
        args += ["-s", sig_path]
        when = _ssh_time(at) if at else None
        if when:
            args += ["-O", f"verify-time={when}"]
        done = _run(args, message, "verify a signature")
    finally:
        os.unlink(sig_path)
    if done.returncode != 0:
        raise SignatureError(
            f"signature does not verify for {principal} against {signers}: {_first_error(done)}"
        )
    return Signed(signature.strip(), principal, fingerprint(blob))
