"""An event is built once, serialised once and hashed once, and its bytes do not change.

``AuditEvent.chained`` assembles the hashed text and the stored line from one serialisation of
each field; they must stay byte for byte what ``canonical_json`` gives (every stored trail's hashes
depend on it).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from runbook import Runner
from runbook.audit import canonical as C
from runbook.audit import events as E
from runbook.audit.events import GENESIS, AuditEvent, canonical_json, event_hash
from runbook.audit.memory import MemorySink
from runbook.audit.pipeline import Recorder
from runbook.clock import SystemClock
from runbook.context import RunInfo
from runbook.redact import Redactor


def _value(rng: random.Random, depth: int = 0):
    pick = rng.randint(0, 8 if depth < 3 else 5)
    if pick == 0:
        return rng.choice(["", "a", "é", "\n", '"', "\\", "\u2028", "\x01", "😀", "x" * 40])
    if pick == 1:
        return rng.randint(-(10**20), 10**20)
    if pick == 2:
        return rng.random() * 10 ** rng.randint(-8, 30) * rng.choice([1, -1])
    if pick == 3:
        return None
    if pick == 4:
        return rng.choice([True, False])
    if pick == 5:
        return rng.choice([-0.0, 1.0, 0.1 + 0.2, 1e100])
    if pick == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if pick == 7:
        return tuple(_value(rng, depth + 1) for _ in range(rng.randint(0, 2)))
    return {
        rng.choice(["a", "b", "é", "E", "_", "10", "9"]) + str(rng.randint(0, 3)): _value(
            rng, depth + 1
        )
        for _ in range(rng.randint(0, 4))
    }


def test_fast_serialisation_is_canonical_json_byte_for_byte() -> None:
    rng = random.Random(20)
    for _ in range(5000):
        value = _value(rng)
        assert C._fast_json(value) == canonical_json(value), value
        assert C.encode(value) == canonical_json(value), value  # the encoder chained uses


def test_the_c_encoder_built_once_is_the_one_json_dumps_builds() -> None:
    assert C.encode is not C._fast_json  # CPython has it: the audit's hot path uses it
    for bad in (float("nan"), {"x": [float("inf")]}):
        try:
            canonical_json(bad)
        except ValueError as expected:
            try:
                C.encode(bad)
            except ValueError as got:
                assert str(got) == str(expected)
            else:
                raise AssertionError("a non-finite float was serialised")
    for odd in ({1: "a", 2: None}, {"when": object}, {"b": (1, 2), "a": {True: 1.5}}):
        assert C.encode(odd) == canonical_json(odd), odd  # int keys, default=str, tuples


def test_chained_event_is_hashed_over_canonical_json_and_stored_as_it() -> None:
    rng = random.Random(21)
    prev = GENESIS
    for seq in range(1, 500):
        event = AuditEvent(
            kind=rng.choice(["step_started", "step_succeeded"]),
            run_id="r",
            runbook={"path": "/x/é.py", "sha256": "ab" * 32},
            step=rng.choice([None, "s1", "é"]),
            actor="alice",
            host="h",
            env="prod",
            at="2026-12-01T12:00:00+00:00",
            params={"version": _value(rng)},
            data={"output": _value(rng), "attempt": seq},
        )
        stored = event.chained(seq, prev)
        assert stored.hash == event_hash(stored)
        assert stored.canonical == canonical_json(stored.to_dict())
        assert E.parse_event(stored.canonical).hash == stored.hash
        prev = stored.hash or GENESIS


def test_non_finite_floats_are_stored_as_names() -> None:
    stored = AuditEvent(kind="k", run_id="r", data={"x": float("nan")}).chained(1, GENESIS)
    assert stored.data == {"x": "NaN"}
    assert stored.canonical == canonical_json(stored.to_dict())
    assert stored.hash == event_hash(stored)


def test_a_run_hashes_each_event_once_and_serialises_the_run_fields_once(
    tmp_path: Path, monkeypatch
) -> None:
    rb = tmp_path / "chain.py"
    rb.write_text(
        "from runbook import step\n\n@step\ndef a():\n    return 1\n\n@step\ndef b(a):\n"
        "    return a\n"
    )
    runner = Runner(store="memory://", audit=["memory://"], locks=None, params={})
    runner.run(rb)  # warm: plugins loaded, providers open
    hashes: list[int] = []
    dumps: list[object] = []
    real_sha, real_dumps = hashlib.sha256, canonical_json
    counted = SimpleNamespace(sha256=lambda data: (hashes.append(1), real_sha(data))[1])
    monkeypatch.setattr(E, "hashlib", counted)  # this module's hashing only
    monkeypatch.setattr(E, "canonical_json", lambda v: (dumps.append(v), real_dumps(v))[1])
    result = runner.run(rb)
    events = [e for e in result.audit]
    assert len(hashes) == len(events)  # hashed once each, never again
    assert dumps == []  # every field of these events through the one-pass serialiser
    (sink,) = runner.sinks
    assert sink.verify().ok


def _recorder(rng: random.Random, actor: str = "alice") -> Recorder:
    info = RunInfo(
        run_id=rng.choice(["r-1", 'r-"quoted"', "r-é"]),
        runbook=rng.choice(["/x/é.py", "/x/a b.py", '/x/"q".py']),
        name="rb",
        sha256="ab" * 32,
        env=rng.choice(["prod", "é", ""]),
        actor=actor,
        params={"version": _value(rng), "n": rng.randint(0, 9)},
    )
    return Recorder(info, [], clock=SystemClock(), redactor=Redactor())


def test_events_built_by_a_run_are_hashed_over_canonical_json_from_its_frame() -> None:
    """A run's events are written from its ``event_frame`` (the text shared by all of them):
    the hashed text and the stored line are still exactly canonical JSON, for any run fields,
    by the run's actor or another one, with any step, kind and data."""
    rng = random.Random(22)
    framed = 0
    for _ in range(50):
        rec = _recorder(rng)
        prev = GENESIS
        for seq in range(1, 20):
            event = rec.build(
                rng.choice(["step_started", "step_succeeded", "approval_granted"]),
                rng.choice([None, "s1", "é", '"']),
                {"output": _value(rng), "attempt": seq} if rng.random() < 0.8 else None,
                actor=rng.choice([None, None, "bob", "é"]),
            )
            framed += event.__dict__.get("_frame") is not None
            stored = event.chained(seq, prev)
            assert stored.hash == event_hash(stored)
            assert stored.canonical == canonical_json(stored.to_dict())
            prev = stored.hash or GENESIS
    assert framed > 300  # the run's actor's (half of them): written from the frame


def test_an_event_changed_after_it_was_built_is_not_written_from_the_stale_frame() -> None:
    rec = _recorder(random.Random(23))
    event = rec.build("step_started", "s1", {"attempt": 1})
    changed = replace(event, run_id="another", actor="mallory", env="dev")
    stored = changed.chained(1, GENESIS)
    assert stored.canonical == canonical_json(stored.to_dict())
    assert '"actor":"mallory"' in (stored.canonical or "")
    assert stored.hash == event_hash(stored)


def test_a_memory_sink_stamps_the_runs_own_draft_and_copies_anything_else() -> None:
    """The pipeline's drafts are chained without a copy; an event from outside, and a draft
    another sink already chained, are never changed."""
    rec = _recorder(random.Random(24))
    first, second = MemorySink(), MemorySink()
    draft = rec.build("step_started", "s1", {"attempt": 1})
    (kept,) = first.append_many([draft])
    assert kept is draft and draft.seq == 1 and draft.hash == event_hash(draft)
    (copied,) = second.append_many([draft])  # a second sink chains it too: a copy of its own
    assert copied is not draft and draft.seq == 1 and draft.hash == kept.hash
    assert second.append(rec.build("step_succeeded", "s1", {})).seq == 2
    assert first.verify().ok and second.verify().ok
    outside = AuditEvent(kind="change_recorded", run_id="r", data={"x": 1})
    stored = first.append(outside)
    assert stored is not outside and outside.seq is None and outside.hash is None
    assert first.verify().ok
