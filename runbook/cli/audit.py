"""``runbook audit``: list the trail with filters; ``runbook audit verify`` checks its chains."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from runbook.audit.events import KINDS, AuditQuery, VerifyReport
from runbook.audit.query import (
    format_table,
    open_sink,
    parse_time,
)
from runbook.cli.common import config_option, handle_errors, json_document, load_config
from runbook.errors import AuditTampered, RunbookError, UsageError
from runbook.proofs import verify_decisions
from runbook.urls import redact_url


class TimeParam(click.ParamType):
    """ISO-8601 or an age (``2h``); parsed against one ``now`` per command."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value), datetime.now(UTC))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@dataclass(frozen=True)
class _SinkRef:
    url: str
    best_effort: bool = False


def _configured(sink_urls: tuple[str, ...], config_path: Path | None) -> list[_SinkRef]:
    """``--sink`` URLs as given, else the ``audit`` sinks of the configuration.

    The configuration has already anchored relative paths at the project root; a bare
    ``sqlite://`` ("in the run store") is the configured store's file.
    """
    if sink_urls:
        return [_SinkRef(url) for url in sink_urls]
    config = load_config(Path.cwd(), config_path)
    store = str(getattr(config, "store", "") or "")
    refs = []
    for entry in getattr(config, "audit", None) or ():
        url = entry.url
        if url.partition("?")[0] == "sqlite://" and store.startswith("sqlite://"):
            url = store
        refs.append(_SinkRef(url, bool(entry.best_effort)))
    if not refs:
        raise UsageError(
            "no audit sinks configured ([tool.runbook] audit = [...]); pass --sink URL"
        )
    return refs


@click.group("audit", invoke_without_command=True)
@click.option("--run", "run_id", metavar="ID", help="Only this run.")
@click.option("--step", metavar="S", help="Only events of this step.")
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    metavar="K",
    help=f"Only this kind of event: {', '.join(KINDS)}.",
)
@click.option("--actor", metavar="A", help="Only events by this actor.")
@click.option("--since", type=TimeParam(), help="From this time: ISO-8601 or an age (30m, 2h, 7d).")
@click.option("--until", type=TimeParam(), help="Up to this time: ISO-8601 or an age.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="At most N events (the first N in chain order).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of events.")
@click.option(
    "--sink",
    "sink_url",
    metavar="URL",
    help="Read this sink (default: the first queryable sink of the config).",
)
@config_option
@click.pass_context
@handle_errors
def audit(
    ctx: click.Context,
    run_id: str | None,
    step: str | None,
    kind: str | None,
    actor: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    as_json: bool,
    sink_url: str | None,
    config_path: Path | None,
) -> None:
    """Query the audit trail; `runbook audit verify` checks its hash chain.

    \b
    Examples:
      runbook audit --run 01JD3X... --kind step_failed
      runbook audit --actor alice --since 7d --json | jq .
      runbook audit --sink sqlite:///.runbook/runbook.db --since 2026-11-23
    """
    if ctx.invoked_subcommand is not None:
        return
    if since and until and since > until:
        raise click.UsageError(
            f"--since ({since:%Y-%m-%d %H:%M:%S}Z) is after --until ({until:%Y-%m-%d %H:%M:%S}Z)"
        )
    refs = _configured((sink_url,) if sink_url else (), config_path)
    sink = None
    for ref in refs:
        candidate = open_sink(ref.url)
        if getattr(candidate, "queryable", True):
            sink = candidate
            break
        candidate.close()
    if sink is None:
        raise UsageError(
            "none of the configured audit sinks can be queried "
            f"({', '.join(redact_url(r.url) for r in refs)}); pass --sink URL"
        )
    query = AuditQuery(
        run_id=run_id, step=step, kind=kind, actor=actor, since=since, until=until, limit=limit
    )
    try:
        events = list(sink.events(query))
    finally:
        sink.close()
    if as_json:
        click.echo(json_document("audit", {"events": [e.to_dict() for e in events]}))
    elif not events:
        click.echo(f"no matching events in {redact_url(sink.url)}")
    else:
        for line in format_table(events):
            click.echo(line)


@audit.command("verify")
@click.option(
    "--sink",
    "sink_urls",
    metavar="URL",
    multiple=True,
    help="Verify this sink (repeatable; default: every configured sink).",
)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per sink, as a list.")
@click.option(
    "--signers",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    metavar="FILE",
    help="Also re-verify every signed decision against this allowed_signers file.",
)
@click.pass_context
@handle_errors
def verify(
    ctx: click.Context,
    sink_urls: tuple[str, ...],
    config_path: Path | None,
    as_json: bool,
    signers: Path | None,
) -> None:
    """Re-compute every hash chain and name the first event changed, removed or reordered.

    Exits 1 when any sink is tampered with or cannot be read.
    """
    parent = ctx.parent.params if ctx.parent else {}
    if not sink_urls and parent.get("sink_url"):
        sink_urls = (parent["sink_url"],)
    config_path = config_path or parent.get("config_path")
    results: list[dict[str, Any]] = []
    for ref in _configured(sink_urls, config_path):
        results.append(_verify_one(ref, with_head=as_json, signers=signers))
    if as_json:
        click.echo(json_document("audit-verify", {"sinks": results}))
    else:
        for result in results:
            click.echo(f"{result['sink']}: {result['message']}")
    bad = [r for r in results if r["status"] in ("tampered", "error")]
    if bad:
        first = bad[0]
        raise AuditTampered(
            f"audit verification failed for {len(bad)} of {len(results)} sink(s); first: "
            f"{first['sink']}: {first['message']}",
            seq=first.get("seq"),
        )


def _verify_one(ref: _SinkRef, *, with_head: bool, signers: Path | None = None) -> dict[str, Any]:
    shown = redact_url(ref.url)
    try:
        sink = open_sink(ref.url)
    except UsageError:
        raise  # no plugin for the scheme, a malformed URL: the command line is wrong (exit 2)
    except RunbookError as exc:
        return {"sink": shown, "status": "error", "ok": False, "message": f"ERROR: {exc}"}
    try:
        if not getattr(sink, "queryable", True):
            return {
                "sink": shown,
                "status": "skipped",
                "ok": None,
                "message": "skipped: a feed for an external system, verify it there",
            }
        report: VerifyReport = sink.verify()
        head = _head(sink) if with_head and report.ok and report.checked else None
        decisions = verify_decisions(sink.events(None), signers) if signers else None
    except RunbookError as exc:
        return {"sink": shown, "status": "error", "ok": False, "message": f"ERROR: {exc}"}
    finally:
        sink.close()
    message = str(report)
    if report.ok and report.checked == 0:
        message += " (empty: no events recorded yet)"
    result: dict[str, Any] = {
        "sink": shown,
        "status": "ok" if report.ok else "tampered",
        "ok": report.ok,
        "checked": report.checked,
        "seq": report.seq,
        "problem": report.problem,
        "message": message,
    }
    if decisions is not None:  # signatures: runbook/proofs.py
        result["message"] += f"; {decisions}"
        result["decisions"] = {"checked": decisions.checked, "unsigned": decisions.unsigned}
        if not decisions.ok:
            seq, problem = decisions.problems[0]
            result.update(status="tampered", ok=False, seq=result["seq"] or seq)
            result["problem"] = result["problem"] or problem
    if head:
        # Keep this elsewhere (a ticket, another system): it proves nothing was cut off the end.
        result["head"] = head
    return result


def _head(sink: Any) -> dict[str, Any] | None:
    last = None
    for last in sink.events(None):  # noqa: B007 - only the last one is wanted
        pass
    return {"seq": last.seq, "hash": last.hash} if last else None


COMMANDS = [audit]
