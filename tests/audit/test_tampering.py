"""Every kind of tampering, on every stored sink, as ``runbook audit verify`` reports it.

Each trail is two runs written the way the engine writes them (witnessed by the run store, a
signed checkpoint at each run's end): events 1..10 are run-1 with its checkpoint at 11, events
12..21 are run-2 with its checkpoint at 22. The attacker then edits the stored bytes; verify must
exit 1 and name the first bad event (``TAMPERED at seq N``) and what is wrong with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from runbook.audit.events import AuditEvent, canonical_json
from runbook.audit.signing import load_signer
from runbook.cli import cli

from .conftest import make_event
from .trails import Trail, make_keys

Doc = dict[str, Any]


def two_runs(trail: Trail) -> list[AuditEvent]:
    events = [make_event(i, run_id="run-1") for i in range(10)]
    events += [make_event(10 + i, run_id="run-2", actor="bob") for i in range(10)]
    stored = trail.write(events)
    assert [e.seq for e in stored if e.kind == "checkpoint"] == [11, 22]
    return stored


def verify(trail: Trail, pubkey: Path | None, *extra: str) -> Result:
    args = ["audit", "verify", "--sink", trail.url, "--store", trail.store_url, *extra]
    if pubkey is not None:
        args += ["--pubkey", str(pubkey)]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def docs_of(trail: Trail) -> list[Doc]:
    return [json.loads(t) for t in trail.texts()]


def store_docs(trail: Trail, docs: list[Doc], *, renumber: bool = False) -> None:
    trail.replace([canonical_json(d) for d in docs], renumber=renumber)


def rehash(doc: Doc) -> Doc:
    """What an attacker who knows the scheme writes: the event's own hash recomputed."""
    event = AuditEvent.from_dict({**doc, "hash": None})
    return event.chained(event.seq or 0, event.prev_hash or "").to_dict()


def rechain(docs: list[Doc], start: int) -> list[Doc]:
    """Every hash from index ``start`` on recomputed, so the chain is valid again."""
    out = docs[:start]
    for doc in docs[start:]:
        doc = {**doc, "prev_hash": out[-1]["hash"] if out else "0" * 64}
        out.append(rehash(doc))
    return out


def assert_tampered(result: Result, seq: int, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert f"TAMPERED at seq {seq}:" in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# -- the attacks ---------------------------------------------------------------------------------


def edit(trail: Trail) -> None:
    docs = docs_of(trail)
    docs[4]["actor"] = "mallory"
    store_docs(trail, docs)


def remove(trail: Trail) -> None:
    docs = docs_of(trail)
    del docs[4]
    store_docs(trail, docs)


def insert(trail: Trail) -> None:
    """A forged event with a valid hash of its own, linked to event 4, put before event 5."""
    docs = docs_of(trail)
    forged = rehash({**docs[4], "kind": "approval_granted", "actor": "mallory"})
    store_docs(trail, [*docs[:4], forged, *docs[4:]], renumber=True)


def reorder(trail: Trail) -> None:
    docs = docs_of(trail)
    docs[4], docs[5] = docs[5], docs[4]
    store_docs(trail, docs, renumber=True)


def replay(trail: Trail) -> None:
    """An old, genuine event (an approval) stored again at the end."""
    docs = docs_of(trail)
    store_docs(trail, [*docs, docs[5]], renumber=True)


def duplicate_key(trail: Trail) -> None:
    """A second "actor" before the real one: the hash (last copy wins in Python) still matches,
    but a reader that takes the first copy shows mallory."""
    texts = trail.texts()
    texts[4] = texts[4].replace('{"actor":', '{"actor":"mallory","actor":', 1)
    assert texts[4].count('"actor":') == 2
    trail.replace(texts)


def cut_tail(trail: Trail) -> None:
    """Run-2's last five events and its checkpoint cut off: the rest is a valid, shorter chain
    that ends right after a good checkpoint (16 events left)."""
    trail.replace(trail.texts()[:16])


def full_rewrite(trail: Trail) -> None:
    """Event 3 changed and every hash after it recomputed: a perfectly valid chain."""
    docs = docs_of(trail)
    docs[2]["actor"] = "mallory"
    store_docs(trail, rechain(docs, 2))


def rewrite_without_checkpoints(trail: Trail) -> None:
    """The same rewrite, with the checkpoints (which would betray it) removed."""
    docs = [d for d in docs_of(trail) if d["kind"] != "checkpoint"]
    for i, doc in enumerate(docs, start=1):
        doc["seq"] = i
    docs[2]["actor"] = "mallory"
    store_docs(trail, rechain(docs, 0))


def delete(trail: Trail) -> None:
    trail.delete()


def retype_seq(trail: Trail) -> None:
    """Event 5's seq written as a string, its hash recomputed over that: a shape runbook never
    writes, which must not reach the chain's arithmetic."""
    docs = docs_of(trail)
    docs[4] = rehash({**docs[4], "seq": "5"})
    store_docs(trail, rechain(docs, 5))


def checkpoint_data_as_array(trail: Trail) -> None:
    """Checkpoint 11's data an array of its own key names, the chain recomputed after it."""
    docs = docs_of(trail)
    docs[10]["data"] = sorted(docs[10]["data"])
    store_docs(trail, rechain(docs, 10))


def lone_surrogate(trail: Trail) -> None:
    """An escaped lone surrogate in event 5's data: valid JSON, but no UTF-8 text holds it."""
    texts = trail.texts()
    texts[4] = texts[4].replace('"data":{', '"data":{"note":"\\ud800",', 1)
    trail.replace(texts)


# attack -> (first bad seq, fragment) per sink ("*" when every sink says the same)
CASES: dict[str, tuple[Callable[[Trail], None], dict[str, tuple[int, str]]]] = {
    "edit": (edit, {"*": (5, "event 5 (approval_requested) was edited")}),
    "remove": (remove, {"*": (6, "event 5 removed")}),
    "insert": (
        insert,
        {
            "jsonl": (5, "event 5 is out of order or inserted (expected seq 6)"),
            "sqlite": (6, "row 6 holds the event hashed as seq 5"),
            "postgresql": (6, "column(s) seq"),
        },
    ),
    "reorder": (
        reorder,
        {
            "jsonl": (6, "events were reordered: event 6 (approval_granted) is stored before"),
            "sqlite": (5, "row 5 holds the event hashed as seq 6"),
            "postgresql": (5, "column(s) seq"),
        },
    ),
    "replay": (
        replay,
        {
            "jsonl": (6, "event 6 is out of order or inserted (expected seq 23)"),
            "sqlite": (23, "row 23 holds the event hashed as seq 6"),
            "postgresql": (23, "column(s) seq"),
        },
    ),
    "duplicate_key": (duplicate_key, {"*": (5, "duplicate key 'actor'")}),
    "cut_tail": (
        cut_tail,
        {"*": (17, "truncated: the trail ends at seq 16, but the run store witnessed events up")},
    ),
    "full_rewrite": (
        full_rewrite,
        {"*": (11, "event 10 was rewritten after it was signed: checkpoint 11")},
    ),
    "rewrite_without_checkpoints": (
        rewrite_without_checkpoints,
        {"*": (11, "is not the event the run store witnessed there (run run-1's last")},
    ),
    "deleted": (delete, {"*": (1, "events 1..22 are missing (runs run-1 (to seq 11), run-2")}),
    "retype_seq": (retype_seq, {"*": (5, "field seq is a string, not an integer or null")}),
    "checkpoint_data_as_array": (
        checkpoint_data_as_array,
        {"*": (11, "field data is an array, not an object")},
    ),
    "lone_surrogate": (lone_surrogate, {"*": (5, "text that is not valid Unicode")}),
}


@pytest.mark.parametrize("attack", list(CASES))
def test_each_tampering_is_named_with_the_first_bad_event(
    signed_trail: Trail, audit_keys: tuple[Path, Path], attack: str
) -> None:
    two_runs(signed_trail)
    assert verify(signed_trail, audit_keys[1]).exit_code == 0
    tamper, expected = CASES[attack]
    tamper(signed_trail)
    seq, fragment = expected.get(signed_trail.name) or expected["*"]
    assert_tampered(verify(signed_trail, audit_keys[1]), seq, fragment)


def test_an_intact_trail_says_what_was_proved(
    signed_trail: Trail, audit_keys: tuple[Path, Path]
) -> None:
    two_runs(signed_trail)
    result = verify(signed_trail, audit_keys[1])
    assert result.exit_code == 0, result.output
    fingerprint = load_signer(audit_keys[0]).fingerprint
    assert "ok: 22 events, chain intact" in result.output
    assert "the run store's witness of 2 runs agrees" in result.output
    assert f"2 checkpoints signed by {fingerprint} up to seq 21" in result.output


def test_a_cut_tail_is_found_without_the_key_too(
    signed_trail: Trail, audit_keys: tuple[Path, Path]
) -> None:
    two_runs(signed_trail)
    cut_tail(signed_trail)
    assert_tampered(verify(signed_trail, None), 17, "events 17..22 are missing (run run-2")


def test_a_full_rewrite_is_a_valid_chain_that_only_the_key_or_the_witness_catch(
    signed_trail: Trail, audit_keys: tuple[Path, Path]
) -> None:
    """The limitation the signed checkpoints exist for: the chain alone says ok."""
    two_runs(signed_trail)
    full_rewrite(signed_trail)
    alone = CliRunner().invoke(cli, ["audit", "verify", "--sink", signed_trail.url])
    assert alone.exit_code == 0 and "ok: 22 events" in alone.output
    assert_tampered(verify(signed_trail, None), 11, "is not the event the run store witnessed")
    signed_only = CliRunner().invoke(
        cli, ["audit", "verify", "--sink", signed_trail.url, "--pubkey", str(audit_keys[1])]
    )
    assert_tampered(signed_only, 11, "event 10 was rewritten after it was signed")


def test_stripped_checkpoints_are_found_with_the_key_alone(
    signed_trail: Trail, audit_keys: tuple[Path, Path]
) -> None:
    """Without the store's witness, the first run end that no checkpoint covers is the tell."""
    two_runs(signed_trail)
    rewrite_without_checkpoints(signed_trail)
    result = CliRunner().invoke(
        cli, ["audit", "verify", "--sink", signed_trail.url, "--pubkey", str(audit_keys[1])]
    )
    assert_tampered(
        result,
        10,
        "event 10 (run_finished of run run-1) is not covered by a signed checkpoint, and the "
        "trail has no valid checkpoint at all",
    )


def test_a_checkpoint_forged_with_another_key_is_refused(
    signed_trail: Trail, audit_keys: tuple[Path, Path], tmp_path: Path
) -> None:
    two_runs(signed_trail)
    mallory = load_signer(make_keys(tmp_path, "mallory")[0])
    docs = docs_of(signed_trail)
    docs[2]["actor"] = "mallory"
    docs = rechain(docs, 2)
    from runbook.audit.checkpoint import make_checkpoint

    for i, doc in enumerate(docs):  # re-sign every checkpoint with mallory's key
        if doc["kind"] == "checkpoint":
            covered = AuditEvent.from_dict(docs[i - 1])
            forged = make_checkpoint(covered, mallory).to_dict()
            docs[i] = {**forged, "seq": doc["seq"], "prev_hash": doc["prev_hash"]}
            docs = rechain(docs, i)
    store_docs(signed_trail, docs)
    result = verify(signed_trail, audit_keys[1])
    assert_tampered(result, 11, f"checkpoint 11 is signed by key {mallory.fingerprint}")
    assert "which is not a trusted key" in result.output


def test_an_edited_signature_is_refused(signed_trail: Trail, audit_keys: tuple[Path, Path]) -> None:
    two_runs(signed_trail)
    docs = docs_of(signed_trail)
    docs[10]["data"]["count"] = 3  # the signed payload changed, the event re-hashed
    store_docs(signed_trail, rechain(docs, 10))
    assert_tampered(
        verify(signed_trail, audit_keys[1]), 11, "the signature does not verify with key"
    )


@pytest.mark.parametrize("column", ["at", "actor", "kind", "run_id"])
def test_an_edited_indexed_column_is_named(
    signed_trail: Trail, audit_keys: tuple[Path, Path], column: str
) -> None:
    """``at`` too: ``--since/--until`` filter on it, so it must be under the hash."""
    if signed_trail.name == "jsonl":
        pytest.skip("a JSON-lines file has no columns beside the event")
    two_runs(signed_trail)
    value: Any = {"at": "2020-01-01T00:00:00+00:00", "actor": "mallory", "kind": "step_skipped"}
    value = value.get(column, "run-x")
    if column == "at" and signed_trail.name == "postgresql":
        value = datetime(2020, 1, 1, tzinfo=UTC)
    signed_trail.set_column(7, column, value)
    assert_tampered(verify(signed_trail, audit_keys[1]), 7, "was edited", column)


def test_an_edited_at_column_also_hides_nothing_from_since(
    signed_trail: Trail, audit_keys: tuple[Path, Path]
) -> None:
    """What the attack is for: moving an event out of a time-bounded query. verify catches it;
    the listing that was fooled is exactly why."""
    if signed_trail.name == "jsonl":
        pytest.skip("a JSON-lines file filters on the hashed JSON itself")
    two_runs(signed_trail)
    moved = datetime(2020, 1, 1, tzinfo=UTC)
    signed_trail.set_column(
        6, "at", moved if signed_trail.name == "postgresql" else "2020-01-01T00:00:00.000000+00:00"
    )
    listed = CliRunner().invoke(
        cli, ["audit", "--sink", signed_trail.url, "--since", "2026-11-23", "--json"]
    )
    assert 6 not in [e["seq"] for e in json.loads(listed.output)["events"]]
    assert_tampered(verify(signed_trail, audit_keys[1]), 6, "at")
