"""Environment protection levels and the flags they map to (DESIGN.md 3)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

LEVELS = ("none", "standard", "strict")


@dataclass(frozen=True)
class Protection:
    """What an environment allows.

    ``require_approval``: gates wait for a human (False: auto-granted and recorded as such).
    ``allow_yes``: ``--yes`` may approve gates as the running actor instead of pausing.
    ``require_rollbacks``: a ``reversible=True`` step without a rollback is refused (exit 2).
    ``allow_force``: ``--force`` may override a safety check (resuming a run whose runbook changed).
    """

    level: str = "standard"
    require_approval: bool = True
    allow_yes: bool = True
    require_rollbacks: bool = False
    allow_force: bool = True

    @classmethod
    def for_level(cls, level: str, **overrides: Any) -> Protection:
        if level not in LEVELS:
            raise ValueError(f"protection must be one of {', '.join(LEVELS)}, got {level!r}")
        base = {
            "none": cls("none", False, True, False, True),
            "standard": cls("standard", True, True, False, True),
            "strict": cls("strict", True, False, True, False),
        }[level]
        flags = {f.name for f in fields(cls)} - {"level"}
        unknown = set(overrides) - flags
        if unknown:
            raise ValueError(f"unknown protection flag(s): {', '.join(sorted(unknown))}")
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
