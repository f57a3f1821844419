"""The canonical text of an audit event: the one byte string its hash is computed over.

Written with sorted keys, no whitespace, UTF-8 and strict RFC 8259 JSON (``canonical_json``), and
read back as strictly (``loads_strict``: a duplicate key, ``NaN`` or ``Infinity`` is refused), so
what a verifier hashes is what a dashboard shows. Kept apart from the events themselves
(``runbook.audit.events``) because it is the part every sink, the checkpoints and the verifier
share, and the part the audit's hot path spends its time in: the C encoder is built once here
(``encode``), not on every call as ``json.dumps`` does.
"""

from __future__ import annotations

import json
import math
from typing import Any

# What json.dumps(..., ensure_ascii=False) writes for a str (the C encoder when available).
encode_str = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.encode_basestring


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, UTF-8, strict RFC 8259 JSON: the one byte string a hash is
    computed over. ``NaN``/``Infinity`` raise ``ValueError`` (they are not JSON); see
    docs/audit.md for why this and not RFC 8785."""
    return json.dumps(
        data,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=str,
    )


def _fast_json(value: Any) -> str:
    """``canonical_json(value)``, byte for byte, without the encoder's set-up for the shapes an
    event is made of (str-keyed dicts, lists, str, int, bool, None, finite floats); anything else
    goes through ``canonical_json`` itself. A non-finite float raises ``ValueError`` as it does."""
    kind = type(value)
    if kind is str:
        return encode_str(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        if value != value or value in (math.inf, -math.inf):
            raise ValueError("Out of range float values are not JSON compliant")
        return float.__repr__(value)
    if kind is dict:
        parts = []
        for key in sorted(value):  # mixed key types raise TypeError, as json.dumps does
            if type(key) is not str:  # json.dumps turns them into strings: let it
                return canonical_json(value)
            parts.append(f"{encode_str(key)}:{_fast_json(value[key])}")
        return "{" + ",".join(parts) + "}"
    if kind is list or kind is tuple:
        return "[" + ",".join(_fast_json(v) for v in value) + "]"
    return canonical_json(value)


def _c_json() -> Any:
    """``canonical_json`` as the C encoder that ``json.dumps`` builds on every call, built once
    (the set-up is most of what ``json.dumps`` costs on a small payload), or None where there is
    no C encoder. Without ``check_circular``: a cycle is a ``RecursionError``, as in
    ``_fast_json``; an event's fields are trees (they come from JSON-shaped values)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None or encode_str is json.encoder.py_encode_basestring:
        return None
    spec = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )
    encode = make(
        None,
        spec.default,
        encode_str,
        None,
        spec.key_separator,
        spec.item_separator,
        spec.sort_keys,
        spec.skipkeys,
        spec.allow_nan,
    )

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    sample = {"b": [1, 2.5, None, True, "é\u2028\n"], "a": {"x": (1,), "1": -0.0}}
    return dumps if dumps(sample) == canonical_json(sample) else None


encode: Any = _c_json() or _fast_json


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Readers disagree on which copy wins (first, last): a forged second "actor" could
            # show one person to a verifier and another to a dashboard.
            raise ValueError(f"duplicate key {key!r} in one JSON object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str | bytes) -> Any:
    """Parse stored JSON as strictly as it was written: a duplicate key, ``NaN`` or
    ``Infinity`` is a ``ValueError``. Every sink reads its events through this."""
    return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
