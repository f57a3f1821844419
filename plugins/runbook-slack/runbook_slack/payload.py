"""JSON bodies as the exact bytes sent (the webhook signs these bytes)."""

from __future__ import annotations

import json
from typing import Any


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()
