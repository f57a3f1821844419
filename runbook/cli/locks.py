"""``runbook locks``: who holds which lock, since when, and for how much longer."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from runbook.cli.common import (
    config_option,
    handle_errors,
    json_document,
    load_config,
    nothing_stored,
)
from runbook.cli.table import table
from runbook.locks.base import Lease


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h20m``, ``2d4h``: fits a column, exact enough to act on."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _row(lease: Lease, now: float) -> dict[str, Any]:
    return {**lease.to_dict(), "expires_in": round(max(0.0, lease.expires_at - now), 3)}


def _table(leases: list[Lease], now: float) -> str:
    header = ("LOCK", "RUN", "ACTOR", "SINCE", "EXPIRES IN", "TOKEN")
    rows = [
        (
            lease.name,
            lease.owner,
            lease.actor or "-",
            _when(lease.acquired_at),
            _duration(lease.expires_at - now),
            str(lease.token),
        )
        for lease in leases
    ]
    return "\n".join(table([header, *rows]))


def _lock_url(lock_url: str | None, config_path: Path | None) -> str:
    if lock_url:
        return lock_url
    return load_config(config_path=config_path).lock


@click.command("locks")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--lock",
    "lock_url",
    metavar="URL",
    help="Lock provider URL (default from [tool.runbook] lock, else file://.runbook/locks).",
)
@config_option
@handle_errors
def locks(as_json: bool, lock_url: str | None, config_path: Path | None) -> None:
    """List held locks: name, holder run id, actor, since, expiry and fencing token.

    A lock whose holder died shows until its lease runs out, then disappears: it is free.
    """
    from runbook.plugins import Plugins

    url = _lock_url(lock_url, config_path)
    leases = []
    if not nothing_stored(url):  # never create the lock folder just to look at it
        provider = Plugins().open("lock", url)
        try:
            leases = sorted(provider.held(), key=lambda lease: lease.name)
        finally:
            provider.close()
    now = time.time()
    if as_json:
        click.echo(json_document("locks", {"locks": [_row(lease, now) for lease in leases]}))
    elif not leases:
        click.echo("no locks held")
    else:
        click.echo(_table(leases, now))


COMMANDS = [locks]
