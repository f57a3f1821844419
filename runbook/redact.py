"""Secret redaction: every secret value becomes ``***`` before anything leaves the process.

Applied to audit data, stored outputs and errors, notifications and CLI output. A value equal to a
secret, and any string containing one (an error message quoting a token), is redacted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "***"


class Redactor:
    def __init__(self, secrets: Iterable[Any] = ()) -> None:
        # Longest first, so a secret containing another is masked whole. Very short secrets would
        # mask innocent text everywhere; they are still masked when a whole value equals them.
        values = {str(s) for s in secrets if s is not None and str(s) != ""}
        self._exact = frozenset(values)
        self._substr = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._exact)

    def add(self, *secrets: Any) -> Redactor:
        return Redactor([*self._exact, *secrets])

    def text(self, value: str) -> str:
        if not self._exact:
            return value
        if value in self._exact:
            return MASK
        for secret in self._substr:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def __call__(self, value: Any) -> Any:
        """Redact any JSON-like structure (and anything else by its ``str``)."""
        if not self._exact:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self(k) if isinstance(k, str) else k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return MASK if str(value) in self._exact and not isinstance(value, bool) else value
        return self.text(str(value))
