"""What a step may return: strict JSON, checked at the step boundary.

Outputs are stored, audited, passed to other steps and resumed from in another process, so they
must survive a JSON round trip unchanged. NaN and Infinity are not JSON (RFC 8259): Python writes
them, but most readers (and PostgreSQL's ``jsonb``) refuse them, so they are rejected here like
any other non-JSON value instead of failing later, far from the step that produced them.
"""

from __future__ import annotations

import json
import math
from typing import Any

_PLAIN = frozenset({type(None), bool, int})


def output_problem(step: str, output: Any) -> TypeError | None:
    """Why ``output`` cannot be a step's output, as the error to fail the step with, or None.

    Text must be valid Unicode: a lone surrogate (``os.fsdecode`` of a file name that is not
    UTF-8 makes one) has no UTF-8 form, so no trail or store could record the output."""
    if type(output) in _PLAIN:
        return None
    if isinstance(output, float) and math.isfinite(output):
        return None
    try:
        if type(output) is str:
            output.encode()
        else:
            json.dumps(output, allow_nan=False, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return TypeError(
            f"step {step!r} returned text that is not valid Unicode (a lone surrogate, as "
            "os.fsdecode makes of bytes that are not UTF-8): return os.fsencode(...).decode("
            "'utf-8', 'backslashreplace') or the bytes' hex instead"
        )
    except ValueError as exc:
        if "Out of range float" in str(exc):
            return TypeError(
                f"step {step!r} returned NaN or Infinity, which is not JSON: return None or a "
                "string for a missing or unbounded measurement"
            )
        return _not_json(step, output)
    except (TypeError, RecursionError):
        return _not_json(step, output)
    return None


def _not_json(step: str, output: Any) -> TypeError:
    return TypeError(
        f"step {step!r} returned a {type(output).__name__}, which is not JSON-serialisable: "
        "return dicts, lists, strings, numbers, booleans or None so the run can be stored and "
        "resumed"
    )


def valid_text(text: str) -> str:
    """``text`` as every record can hold it: a lone surrogate (``os.fsdecode`` of bytes that are
    not UTF-8, quoted in an exception's message) has no UTF-8 form, so a trail or a store would
    refuse the event or row reporting a failure; it is written as its escape (``\\udcff``)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
