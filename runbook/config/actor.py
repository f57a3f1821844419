"""Who is running this: ``--as``, else ``RUNBOOK_ACTOR``, else git's ``user.email``, else the
OS user. The audit trail records it; four-eyes approvals compare it (``runbook.identity``).
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

GIT_TIMEOUT = 2.0  # seconds; the actor lookup must never hang a run


def resolve_actor(
    explicit: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Who is running this: ``--as``, else ``RUNBOOK_ACTOR``, else git ``user.email``, else the OS
    user. The audit trail records it; four-eyes approvals compare it."""
    if explicit and explicit.strip():
        return explicit.strip()
    environ = os.environ if environ is None else environ
    actor = environ.get("RUNBOOK_ACTOR", "").strip()
    if actor:
        return actor
    email = _git_email(cwd)
    if email:
        return email
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers) and no LOGNAME/USER
        return f"uid-{os.getuid()}"


def _git_email(cwd: Path | None) -> str | None:
    try:
        done = subprocess.run(
            ["git", "config", "user.email"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    email = done.stdout.strip()
    return email if done.returncode == 0 and email else None
