"""Audit sink throughput, verification speed and the cost of canonical JSON on this machine.

    .venv/bin/python bench/audit.py [--events 2000] [--verify-events 100000] [--dir /real/disk]

Appends realistic events (a step's params, output and timing, ~700 bytes of JSON) one at a time,
as the engine does, and prints events/second and per-event latency (median, p99) per sink as a
table, then the same numbers as one JSON line. ``jsonl`` fsyncs every event (its default);
``jsonl-nofsync`` shows what that fsync costs. ``--dir`` should be on the disk the trail will
live on: fsync cost is a property of the disk, not of runbook.

Verification: a trail of ``--verify-events`` events (runs of 100 events, so a signed checkpoint
after each run's end and every 1,000th event, as ``audit_key`` writes them) is verified four ways
in the same process: the plain chain, the chain plus every checkpoint signature (``--pubkey``),
plus the run store's witness, and the chain plus an expected head. Canonical JSON: the
microseconds per event of runbook's ``canonical_json`` against RFC 8785 (the ``rfc8785``
package), and whether the two give the same bytes for these events.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from runbook.audit.checkpoint import CheckpointCheck
from runbook.audit.checks import HeadCheck, WitnessCheck
from runbook.audit.events import AuditEvent, canonical_json
from runbook.audit.log import AuditLog
from runbook.audit.memory import MemorySink
from runbook.audit.query import normalize_at, open_sink
from runbook.store.base import AuditWitness

RUN_LENGTH = 100  # events per run in the verification trail

KINDS = ("step_started", "step_succeeded", "lock_acquired", "change_recorded", "lock_released")


def realistic(i: int) -> AuditEvent:
    kind = KINDS[i % len(KINDS)]
    return AuditEvent(
        kind=kind,
        run_id="01JDBENCH7Q4M2Z8X9RTYV6K3N",
        runbook={"path": "runbooks/deploy.py", "sha256": "9f2c" * 16},
        step=f"rollout.shift-{(i // len(KINDS)) % 100}",
        actor="alice@example.com",
        host="ops-runner-3.prod.internal",
        env="prod",
        at=f"2026-11-23T18:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}000+00:00",
        params={"version": "2026.11.23-4f1c2e9", "replicas": 6, "registry_token": "***"},
        data={
            "attempt": 1,
            "duration_ms": 1234 + i % 97,
            "output": {"color": "green", "weight": 25, "instances": [f"web-{n}" for n in range(6)]},
            "lock": "web-prod",
            "fencing_token": 4200 + i,
        },
    )


def measure(sink: Any, events: list[AuditEvent]) -> dict[str, Any]:
    latencies = []
    started = time.perf_counter()
    for event in events:
        t0 = time.perf_counter()
        sink.append(event)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    latencies.sort()
    report = sink.verify()
    checkpoints = sum(1 for e in sink.events() if e.kind == "checkpoint")
    assert report.ok and report.checked == len(events) + checkpoints, report
    return {
        "events": len(events),
        "events_per_s": round(len(events) / elapsed),
        "median_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
        "total_s": round(elapsed, 3),
    }


def write_keys(folder: Path) -> None:
    """An Ed25519 pair as ``ssh-keygen -t ed25519`` writes it: ``key`` and ``key.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    (folder / "key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    (folder / "key.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )


def signed_trail(n: int, folder: Path) -> tuple[list[AuditEvent], Any, list[AuditWitness]]:
    """``n`` events in runs of RUN_LENGTH, chained and checkpointed as a run writes them (in
    memory: writing is not what is measured here), the public key and the store's witness."""
    from runbook.audit.signing import load_public_key, load_signer

    write_keys(folder)
    sink = MemorySink()
    log = AuditLog(sink, signer=load_signer(folder / "key"))
    last: dict[str, tuple[int, str]] = {}
    i = 0
    while len(sink._events) < n:
        run = f"run-{i // RUN_LENGTH:05d}"
        event = replace(realistic(i), run_id=run)
        if i % RUN_LENGTH == RUN_LENGTH - 1:
            event = replace(event, kind="run_finished")
        log.append(event)
        tail = sink._events[-1]
        last[run] = (tail.seq or 0, tail.hash or "")
        i += 1
    events = list(sink._events)  # n, or a few more: the last append's checkpoint is kept
    witnesses = [AuditWitness(r, "bench", s, h) for r, (s, h) in last.items()]
    return events, load_public_key(folder / "key.pub"), witnesses


def write_sqlite(path: Path, events: list[AuditEvent]) -> None:
    """The sink's own table filled in one transaction (the sink appends one by one, which is
    not what this part measures): the same columns the sqlite sink writes."""
    sink = open_sink(f"sqlite:///{path}")
    conn = sink._connect()  # creates the database and the table, as the first append would
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO audit_events (seq, run_id, step, kind, actor, at, prev_hash, hash, event)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.seq,
                e.run_id,
                e.step,
                e.kind,
                e.actor,
                normalize_at(e.at),
                e.prev_hash,
                e.hash,
                canonical_json(e.to_dict()),
            )
            for e in events
        ],
    )
    conn.execute("COMMIT")
    sink.close()


def verify_speed(n: int, folder: Path) -> dict[str, Any]:
    events, pubkey, witnesses = signed_trail(n, folder)
    checkpoints = sum(1 for e in events if e.kind == "checkpoint")
    jsonl_path = folder / "verify.jsonl"
    with open(jsonl_path, "w") as handle:
        for event in events:
            handle.write(canonical_json(event.to_dict()) + "\n")
    write_sqlite(folder / "verify.db", events)
    head = (events[-1].seq or 0, events[-1].hash or "")
    ways = {
        "chain": lambda: [],
        "chain+signatures": lambda: [CheckpointCheck([pubkey])],
        "chain+signatures+witness": lambda: [
            CheckpointCheck([pubkey]),
            WitnessCheck(witnesses),
        ],
        "chain+expected head": lambda: [HeadCheck(*head)],
    }
    n = len(events)
    results: dict[str, Any] = {"events": n, "checkpoints": checkpoints, "sinks": {}}
    for name, url in (
        ("jsonl", f"jsonl://{jsonl_path}"),
        ("sqlite", f"sqlite:///{folder / 'verify.db'}"),
    ):
        sink = open_sink(url)
        rows = {}
        for way, checks in ways.items():
            started = time.perf_counter()
            report = sink.verify(checks())
            elapsed = time.perf_counter() - started
            assert report.ok and report.checked == n, report
            rows[way] = {"events_per_s": round(n / elapsed), "total_s": round(elapsed, 3)}
        sink.close()
        results["sinks"][name] = rows
    return results


def canonical_cost(events: list[AuditEvent]) -> dict[str, Any]:
    bodies = []
    for i, event in enumerate(events):
        body = event.chained(i + 1, "0" * 64).to_dict()
        body.pop("hash")
        bodies.append(body)
    rounds = max(1, 20000 // len(bodies))

    def per_event(fn: Any) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            for body in bodies:
                fn(body)
        return (time.perf_counter() - started) / (rounds * len(bodies)) * 1e6

    out: dict[str, Any] = {"ours_us": round(per_event(canonical_json), 2)}
    try:
        import rfc8785
    except ImportError:
        out["rfc8785_us"] = None
        return out
    out["rfc8785_us"] = round(per_event(rfc8785.dumps), 2)
    out["same_bytes"] = all(canonical_json(b).encode() == rfc8785.dumps(b) for b in bodies)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--verify-events", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a temp dir)")
    args = parser.parse_args()
    events = [realistic(i) for i in range(args.events)]
    size = len(json.dumps(events[1].chained(2, "0" * 64).to_dict(), separators=(",", ":")))

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        from runbook.audit.signing import load_signer
        from runbook.store.sqlite import SqliteStore

        store = SqliteStore(Path(tmp) / "store.db")
        write_keys(Path(tmp))
        sinks: dict[str, Any] = {
            "memory": MemorySink(),
            "jsonl": open_sink(f"jsonl://{tmp}/audit.jsonl"),
            "jsonl-nofsync": open_sink(f"jsonl://{tmp}/nofsync.jsonl", fsync=False),
            "sqlite": open_sink(f"sqlite:///{tmp}/runbook.db"),
            # What a run pays: the event, the store's witness of it, a checkpoint now and then.
            "jsonl+witness": AuditLog(open_sink(f"jsonl://{tmp}/w.jsonl"), store=store),
            "jsonl+witness+sign": AuditLog(
                open_sink(f"jsonl://{tmp}/ws.jsonl"),
                store=store,
                signer=load_signer(Path(tmp) / "key"),
            ),
        }
        results = {}
        for name, sink in sinks.items():
            try:
                results[name] = measure(sink, events)
            finally:
                sink.close()
        store.close()

    print(
        f"audit sinks: {args.events} events of ~{size} bytes, one append at a time "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()})"
    )
    print(f"{'sink':<20}{'events/s':>10}{'median ms':>11}{'p99 ms':>9}{'total s':>9}")
    for name, r in results.items():
        print(
            f"{name:<20}{r['events_per_s']:>10}{r['median_ms']:>11.3f}{r['p99_ms']:>9.3f}"
            f"{r['total_s']:>9.2f}"
        )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        verified = verify_speed(args.verify_events, Path(tmp))
    print(
        f"\nverify: {verified['events']} events with {verified['checkpoints']} signed "
        f"checkpoints (runs of {RUN_LENGTH} events), each way measured in this process"
    )
    print(f"{'sink':<8}{'checks':<27}{'events/s':>10}{'total s':>9}")
    for sink_name, rows in verified["sinks"].items():
        for way, r in rows.items():
            print(f"{sink_name:<8}{way:<27}{r['events_per_s']:>10}{r['total_s']:>9.2f}")

    cost = canonical_cost(events[:500])
    rfc = cost["rfc8785_us"]
    print(
        f"\ncanonical JSON per event: runbook {cost['ours_us']:.1f} µs, "
        + (
            f"RFC 8785 (rfc8785 package) {rfc:.1f} µs ({rfc / cost['ours_us']:.1f}x); "
            f"same bytes for these events: {cost['same_bytes']}"
            if rfc
            else "RFC 8785: rfc8785 not installed"
        )
    )
    print(
        json.dumps(
            {
                "bench": "audit",
                "event_bytes": size,
                "results": results,
                "verify": verified,
                "canonical_json": cost,
            },
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    main()
