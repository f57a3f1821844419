"""``runbook audit``: list the trail with filters; ``verify`` proves it intact and complete;
``head`` prints the head to keep elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from runbook.audit.checkpoint import CheckpointCheck
from runbook.audit.checks import HeadCheck, parse_head
from runbook.audit.events import KINDS
from runbook.audit.log import chain_id
from runbook.audit.query import (
    AuditQuery,
    format_table,
    last_event,
    open_sink,
    parse_time,
)
from runbook.audit.signing import load_public_key
from runbook.audit.verify import VerifyReport, verify_sink, witness_check
from runbook.cli.common import (
    config_option,
    handle_errors,
    json_document,
    load_config,
    nothing_stored,
)
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


def _configured(
    sink_urls: tuple[str, ...], config_path: Path | None, config: Any = None
) -> list[_SinkRef]:
    """``--sink`` URLs as given, else the ``audit`` sinks of the configuration.

    The configuration has already anchored relative paths at the project root; a bare
    ``sqlite://`` ("in the run store") is the configured store's file.
    """
    if sink_urls:
        return [_SinkRef(url) for url in sink_urls]
    config = config or load_config(Path.cwd(), config_path)
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
    sink = _queryable(_configured((sink_url,) if sink_url else (), config_path))
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


class HeadParam(click.ParamType):
    """``SEQ:HASH`` as ``runbook audit head`` prints it."""

    name = "SEQ:HASH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_head(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@audit.command("verify")
@click.option(
    "--sink",
    "sink_urls",
    metavar="URL",
    multiple=True,
    help="Verify this sink (repeatable; default: every configured sink).",
)
@click.option(
    "--pubkey",
    "pubkeys",
    metavar="KEY.pub",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check every signed checkpoint against this Ed25519 public key (repeatable, for "
    "rotated keys); an event that should be covered by one and is not fails.",
)
@click.option(
    "--expect-head",
    "heads",
    metavar="SEQ:HASH",
    multiple=True,
    type=HeadParam(),
    help="Fail unless this event (as `runbook audit head` printed it) is present and intact.",
)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    help="Cross-check against this run store's witness (default: the configured store, "
    "when the sinks come from the configuration).",
)
@click.option(
    "--signers",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    metavar="FILE",
    help="Also re-verify every signed decision against this allowed_signers file.",
)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per sink, as a list.")
@click.pass_context
@handle_errors
def verify(
    ctx: click.Context,
    sink_urls: tuple[str, ...],
    pubkeys: tuple[Path, ...],
    heads: tuple[tuple[int, str], ...],
    store_url: str | None,
    signers: Path | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Prove the trail intact and complete: the hash chain, the run store's witness of each
    run's last event, and with --pubkey every signed checkpoint.

    Exits 0 when intact, 1 when an event was changed, removed, inserted or reordered, or the
    trail was cut short or rewritten (naming the first bad event), 2 on usage errors.
    """
    parent = ctx.parent.params if ctx.parent else {}
    if not sink_urls and parent.get("sink_url"):
        sink_urls = (parent["sink_url"],)
    config_path = config_path or parent.get("config_path")
    config = None if sink_urls else load_config(Path.cwd(), config_path)
    keys = [load_public_key(p) for p in pubkeys]
    refs = _configured(sink_urls, config_path, config)
    if heads and len(refs) > 1:
        raise UsageError(
            "--expect-head names an event of one chain, and "
            f"{len(refs)} sinks are to be verified; choose one with --sink"
        )
    store = _open_store(store_url or (getattr(config, "store", None) if config else None))
    results: list[dict[str, Any]] = []
    try:
        for ref in refs:
            results.append(_verify_one(ref, store=store, keys=keys, heads=heads, signers=signers))
    finally:
        if store is not None:
            store.close()
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


def _open_store(url: str | None) -> Any:
    """The run store to cross-check, or None: an in-process store of another process is gone,
    and a SQLite store that does not exist is not created by a read-only command."""
    if not url or url.startswith("memory:") or nothing_stored(url):
        return None
    from runbook.plugins import Plugins

    return Plugins().open("store", url)


def _verify_one(
    ref: _SinkRef,
    *,
    store: Any,
    keys: list[Any],
    heads: tuple[tuple[int, str], ...],
    signers: Path | None = None,
) -> dict[str, Any]:
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
        # The signature check first: when it and the witness both see a rewrite at the same
        # checkpoint, "rewritten after it was signed" is the stronger statement.
        checks: list[Any] = [CheckpointCheck(keys)] if keys else []
        if store is not None:
            missing = getattr(sink, "missing", None)
            witness = witness_check(
                store, chain_id(sink), empty_why=(missing() if missing else None) or ""
            )
            if witness is not None:
                checks.append(witness)
        checks += [HeadCheck(seq, digest) for seq, digest in heads]
        report: VerifyReport = verify_sink(sink, checks)
        decisions = verify_decisions(sink.events(None), signers) if signers else None
    except RunbookError as exc:
        return {"sink": shown, "status": "error", "ok": False, "message": f"ERROR: {exc}"}
    finally:
        sink.close()
    message = redact_text(str(report), ref.url)
    if report.ok and report.checked == 0:
        message += " (empty: no events recorded yet)"
    result: dict[str, Any] = {
        "sink": shown,
        "status": "ok" if report.ok else "tampered",
        "ok": report.ok,
        "checked": report.checked,
        "seq": report.seq,
        "problem": redact_text(report.problem, ref.url),
        "message": message,
    }
    if decisions is not None:  # signed decisions: runbook/proofs.py
        result["message"] += f"; {decisions}"
        result["decisions"] = {"checked": decisions.checked, "unsigned": decisions.unsigned}
        if not decisions.ok:
            seq, problem = decisions.problems[0]
            result.update(status="tampered", ok=False, seq=result["seq"] or seq)
            result["problem"] = result["problem"] or problem
    if report.ok and report.head:
        # Keep this elsewhere (a ticket, another system): it proves nothing was cut off the end.
        result["head"] = {"seq": report.head[0], "hash": report.head[1]}
    return result


def redact_text(text: str, url: str) -> str:
    """A message that might quote the sink's URL (a driver error) with the URL redacted."""
    return text.replace(url, redact_url(url)) if url in text else text


@audit.command("head")
@click.option(
    "--sink",
    "sink_url",
    metavar="URL",
    help="Read this sink (default: the first queryable sink of the config).",
)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@handle_errors
def head(ctx: click.Context, sink_url: str | None, config_path: Path | None, as_json: bool) -> None:
    """Print the trail's last event as SEQ:HASH, and its latest signed checkpoint.

    Keep the line somewhere the operators of this system cannot rewrite (a change ticket, a
    WORM bucket); `runbook audit verify --expect-head SEQ:HASH` later proves the trail still
    holds that event unchanged.
    """
    parent = ctx.parent.params if ctx.parent else {}
    sink_url = sink_url or parent.get("sink_url")
    config_path = config_path or parent.get("config_path")
    sink = _queryable(_configured((sink_url,) if sink_url else (), config_path))
    try:
        last = last_event(sink)
        checkpoint = last_event(sink, AuditQuery(kind="checkpoint")) if last else None
    finally:
        sink.close()
    if last is None:
        raise UsageError(f"{redact_url(sink.url)} holds no events yet: there is no head")
    found: dict[str, Any] = {"sink": redact_url(sink.url), "seq": last.seq, "hash": last.hash}
    if checkpoint is not None:
        data = checkpoint.data
        found["checkpoint"] = {
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
            "covers": {"seq": data.get("seq"), "hash": data.get("hash")},
            "at": data.get("at"),
            "key_fingerprint": data.get("key_fingerprint"),
            "signature": data.get("signature"),
        }
    if as_json:
        click.echo(json_document("audit-head", found))
        return
    click.echo(f"{last.seq}:{last.hash}")
    if checkpoint is not None:
        data = checkpoint.data
        click.echo(
            f"checkpoint {checkpoint.seq}:{checkpoint.hash} covers {data.get('seq')}:"
            f"{data.get('hash')}, signed by {data.get('key_fingerprint')} at {data.get('at')}"
        )


def _queryable(refs: list[_SinkRef]) -> Any:
    for ref in refs:
        candidate = open_sink(ref.url)
        if getattr(candidate, "queryable", True):
            return candidate
        candidate.close()
    raise UsageError(
        "none of the configured audit sinks can be queried "
        f"({', '.join(redact_url(r.url) for r in refs)}); pass --sink URL"
    )


COMMANDS = [audit]
