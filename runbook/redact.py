"""Secret redaction: the one path every value takes before it leaves the process.

Output, progress lines, dry-run plans, the store, the audit trail, notifications, lock names and
error messages all mask through a ``Redactor`` built from the run's secret values. A secret is
found in its plain form, in any case (``token.upper()``), percent-encoded (as httpx and urllib
write URLs, ``+`` for a space included), in hex, in base64 and base64url, even inside a longer
base64 blob (a ``Basic`` auth header encodes ``user:token``), and escaped as a JSON string or a
Python ``repr`` writes it (a step that returns ``json.dumps({"password": ...})``). A secret that
is a list or a dict is each of its items.

Masking works on *values*, never on serialised text: callers mask a step's output, an error, a
message, and only then serialise. So a secret that happens to be a common word (``step``) masks
that word inside values but can never turn a JSON key of runbook's own documents into ``***s``.
Secrets shorter than ``MIN_SECRET`` characters cannot be masked inside text without masking
everything; ``runbook.params`` refuses them as a usage error, and here they are only masked where
a whole value equals one.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET = 4  # shorter secrets are a usage error (DESIGN 13)
_NOTHING = re.compile("%")  # the screen of a Redactor without secrets, as one would build it
_URL_SAFE = str.maketrans("+/", "-_")


def _percent(char: str) -> str:
    """A regex for one character, literal or percent-encoded (any case), ``+`` for a space."""
    options = [re.escape(char)]
    encoded = "".join(f"%{b:02x}" for b in char.encode("utf-8"))
    options.append(re.escape(encoded))
    if char == " ":
        options.append(r"\+")
    return options[0] if char.isalnum() and char.isascii() else "(?:" + "|".join(options) + ")"


def _base64_forms(secret: bytes) -> set[str]:
    """The secret's base64 and base64url text at each of the three byte alignments.

    Inside a longer blob the characters at the edges also encode neighbouring bytes, so for each
    alignment only the characters that depend on the secret's bytes alone are kept.
    """
    forms: set[str] = set()
    for full in (base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode()):
        forms.update((full, full.rstrip("=")))  # JWTs and many URLs drop the padding
    for offset in range(3):
        text = base64.b64encode(b"\0" * offset + secret).decode().rstrip("=")
        core = text[(8 * offset + 5) // 6 : (8 * (offset + len(secret))) // 6]
        if len(core) >= MIN_SECRET:
            forms.add(core)
            forms.add(core.translate(_URL_SAFE))
    return forms


def secret_values(secrets: Iterable[Any]) -> Iterable[Any]:
    """Each secret value, a list's or a dict's items one by one (a ``secret=True`` list param
    is as many secrets: one of them is what a step puts in a message)."""
    for secret in secrets:
        if isinstance(secret, Mapping):
            yield from secret_values(secret.values())
        elif isinstance(secret, list | tuple | set | frozenset):
            yield from secret_values(secret)
        else:
            yield secret


def _escaped_forms(secret: str) -> set[str]:
    """The secret as text quoting it writes it, where that differs from the secret: inside a
    JSON string (``json.dumps``, ASCII-escaped or not), a Python ``repr`` and a shell word
    (``shlex.quote``: a command's text), and each of those quoted once more (a JSON document in
    a log line, a repr in a JSON error). A step's output
    that is JSON text, or an exception that repr's a password with a backslash or a quote in
    it, then masks like the plain form."""
    forms = {secret}
    for _ in range(2):
        forms |= {
            text
            for form in forms
            for text in (
                json.dumps(form)[1:-1],
                json.dumps(form, ensure_ascii=False)[1:-1],
                repr(form)[1:-1],
                shlex.quote(form),
            )
        }
    forms.discard(secret)
    return {form for form in forms if len(form) >= MIN_SECRET}


def _case_forms(secret: str) -> set[str]:
    """The secret upper- or lower-cased where that changes its length (``straße`` upper-cased
    is ``STRASSE``): matching ignores case one character for one, which cannot see those."""
    return {f for f in (secret.upper(), secret.lower(), secret.casefold()) if len(f) != len(secret)}


class Redactor:
    """Masks a run's secrets in any JSON-like value. Falsy when there is nothing to mask."""

    def __init__(self, secrets: Iterable[Any] = ()) -> None:
        values = {str(s) for s in secret_values(secrets) if s is not None and str(s) != ""}
        self._secrets = frozenset(values)
        self._exact = frozenset(v.lower() for v in values)
        if not values:  # most runs have no secret: nothing to compile (every run makes one)
            self._screen, self._pattern = _NOTHING, None
            return
        insensitive: set[str] = set()  # regexes: plain/percent-encoded, hex
        sensitive: set[str] = set()  # literal base64 text
        literals: set[str] = set()  # lowercased forms, for the cheap "is anything here" test
        for value in values:
            if len(value) < MIN_SECRET:
                continue
            insensitive.add("".join(_percent(c) for c in value))
            insensitive.add(re.escape(value.encode("utf-8").hex()))
            sensitive |= _base64_forms(value.encode("utf-8"))
            literals.update(
                f.lower() for f in (value, quote(value, safe=""), quote(value), quote_plus(value))
            )
            for form in _escaped_forms(value) | _case_forms(value):
                insensitive.add(re.escape(form))
                literals.add(form.lower())
            literals.add(value.encode("utf-8").hex())
        screen = [f"(?i:{re.escape(f)})" for f in sorted(literals, key=len, reverse=True)]
        screen += [re.escape(f) for f in sorted(sensitive, key=len, reverse=True)]
        screen.append("%")  # partly percent-encoded forms: leave those to the full pattern
        self._screen = re.compile("|".join(screen))
        parts = [f"(?i:{p})" for p in sorted(insensitive, key=len, reverse=True)]
        parts += [re.escape(p) for p in sorted(sensitive, key=len, reverse=True)]
        self._pattern = re.compile("|".join(parts)) if parts else None

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def add(self, *secrets: Any) -> Redactor:
        return Redactor([*self._secrets, *secrets])

    def text(self, value: str) -> str:
        """Mask every form of every secret inside ``value``."""
        if not self._secrets:
            return value
        if value.lower() in self._exact:
            return MASK
        if self._pattern is None or not self._may_contain(value):
            return value
        return self._pattern.sub(MASK, value)

    def _may_contain(self, value: str) -> bool:
        """A cheap screen of literal forms before the full pattern: most text holds no secret.
        Any ``%`` goes on to the full pattern, which also finds partly percent-encoded forms."""
        return self._screen.search(value) is not None

    def __call__(self, value: Any) -> Any:
        """Mask a value: strings, and recursively dicts (keys too: they are data here), lists."""
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self(k) if isinstance(k, str) else k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self(v) for v in value]
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return MASK if str(value).lower() in self._exact else value
        return self.text(str(value))

    def fields(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Mask the values of one of runbook's own records, leaving its keys (``step``, ``error``)
        alone: those are runbook's vocabulary, not data, and must survive any secret."""
        if not self._secrets:
            return dict(data)
        return {k: self(v) for k, v in data.items()}


# -- the stored form of an output that held a secret -----------------------------------------

REDACTED_KEY = "__runbook_redacted__"


def is_redacted(output: Any) -> bool:
    """A stored output that contained a secret: ``{REDACTED_KEY: True, "value": <masked>}``.

    The store keeps the masked value inside this wrapper, so a resume knows the real output is
    gone (the step runs again) and a view shows the value, never the wrapper."""
    return isinstance(output, dict) and output.get(REDACTED_KEY) is True


def stored_output(output: Any, mask: Callable[[Any], Any] | None) -> Any:
    """``output`` as it may leave the process (the run store, a workflow's history): as it is
    unless ``mask`` changes it, then its masked value in the ``is_redacted`` wrapper. A secret
    is never stored; the wrapper says the stored value is not the real one."""
    if output is None or mask is None or is_redacted(output):
        return output
    masked = mask(output)
    return output if masked == output else {REDACTED_KEY: True, "value": masked}
