"""``jsonl://``: one chain across processes and threads, torn writes refused, clear failures."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runbook.audit import jsonl as jsonl_module
from runbook.audit.jsonl import JsonlSink
from runbook.audit.query import open_sink
from runbook.errors import AuditError

from .conftest import JsonlStored, make_event

# A child process: says "ready", waits for "go" so all children append at the same moment.
CHILD = """
import sys
from runbook.audit.events import AuditEvent
from runbook.audit.query import open_sink
url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sink = open_sink(url)
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    sink.append(AuditEvent(kind="step_started", run_id=who, step=f"s{i}", actor=who,
                           at="2026-11-23T18:00:00+00:00", data={"i": i}))
sink.close()
"""


def run_children(url: str, processes: int, each: int) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, f"p{n}", str(each)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            assert child.wait(timeout=60) == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


@pytest.mark.slow
def test_four_processes_appending_form_one_intact_chain(jsonl: JsonlStored) -> None:
    run_children(jsonl.url, processes=4, each=100)
    events = list(jsonl.sink.events())
    assert [e.seq for e in events] == list(range(1, 401))
    assert {e.run_id for e in events} == {"p0", "p1", "p2", "p3"}
    for who in ("p0", "p1", "p2", "p3"):  # each writer's events kept their own order
        assert [e.data["i"] for e in events if e.run_id == who] == list(range(100))
    report = jsonl.sink.verify()
    assert report.ok and report.checked == 400


def test_threads_sharing_one_sink_form_one_chain(jsonl: JsonlStored) -> None:
    def write(n: int) -> None:
        for i in range(25):
            jsonl.sink.append(make_event(i, run_id=f"t{n}"))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in jsonl.sink.events()] == list(range(1, 101))
    assert jsonl.sink.verify().ok


def test_one_canonical_json_object_per_line(jsonl: JsonlStored) -> None:
    stored = jsonl.fill(2)
    lines = jsonl.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["seq"] == 1 and first["hash"] == stored[0].hash
    assert lines[0] == json.dumps(first, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_non_ascii_and_newlines_in_data_stay_on_one_line(jsonl: JsonlStored) -> None:
    jsonl.sink.append(make_event(0, error="Zürich\nline two ✗"))
    (event,) = jsonl.sink.events()
    assert event.data["error"] == "Zürich\nline two ✗"
    assert len(jsonl.path.read_bytes().splitlines()) == 1
    assert jsonl.sink.verify().ok


def test_append_after_a_torn_last_line_refuses_with_a_repair_hint(jsonl: JsonlStored) -> None:
    jsonl.fill(3)
    good_size = jsonl.path.stat().st_size
    with open(jsonl.path, "ab") as handle:
        handle.write(b'{"actor":"alice","at":"2026-11-23T18')  # the crash, mid-write
    with pytest.raises(AuditError) as info:
        jsonl.sink.append(make_event(3))
    message = str(info.value)
    assert jsonl.url in message and "refuses to append" in message
    assert f"truncate -s {good_size} {jsonl.path}" in message
    assert jsonl.path.stat().st_size == good_size + 36  # nothing chained past the garbage
    # The hint works: cut the torn bytes and the chain continues.
    os.truncate(jsonl.path, good_size)
    assert jsonl.sink.append(make_event(3)).seq == 4
    assert jsonl.sink.verify().ok


def test_append_after_a_complete_garbage_last_line_refuses(jsonl: JsonlStored) -> None:
    jsonl.fill(2)
    with open(jsonl.path, "a") as handle:
        handle.write("not an event\n")
    with pytest.raises(AuditError, match="the last line is not an audit event"):
        jsonl.sink.append(make_event(2))


def test_last_line_longer_than_a_read_block_is_found(jsonl: JsonlStored) -> None:
    jsonl.sink.append(make_event(0, output="x" * 20_000))
    jsonl.sink.append(make_event(1, output="y" * 9_000))
    assert jsonl.sink.append(make_event(2)).seq == 3
    assert jsonl.sink.verify().ok


def test_events_skip_unreadable_lines_with_a_warning(
    jsonl: JsonlStored, caplog: pytest.LogCaptureFixture
) -> None:
    jsonl.fill(3)
    lines = jsonl.lines()
    lines.insert(1, "garbage\n")
    jsonl.write_lines(lines)
    assert [e.seq for e in jsonl.sink.events()] == [1, 2, 3]
    assert "line 2 is not an audit event" in caplog.text


def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sink = open_sink("jsonl://.runbook/audit.jsonl")
    sink.append(make_event(0))
    sink.close()
    assert (tmp_path / ".runbook" / "audit.jsonl").is_file()


def test_a_rotated_file_starts_a_new_chain_in_the_new_file(jsonl: JsonlStored) -> None:
    jsonl.fill(2)
    jsonl.path.rename(jsonl.path.with_suffix(".1"))
    assert jsonl.sink.append(make_event(2)).seq == 1
    assert jsonl.path.is_file()


def test_a_removed_file_is_created_again_and_starts_a_new_chain(jsonl: JsonlStored) -> None:
    jsonl.fill(2)
    jsonl.path.unlink()
    assert jsonl.sink.append(make_event(2)).seq == 1
    assert [e.seq for e in jsonl.sink.events()] == [1]


def test_a_file_rotated_while_the_lock_is_awaited_gets_no_event(
    jsonl: JsonlStored, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open descriptor is reused without looking at the path first: the path is checked
    once the lock is held, and a file rotated before that is left alone."""
    jsonl.fill(2)
    old = jsonl.path.with_suffix(".1")
    real_flock = fcntl.flock
    rotations = []

    def flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not rotations:  # the first lock: rotate before it
            rotations.append(fd)
            jsonl.path.rename(old)
            jsonl.path.write_text("")
        real_flock(fd, operation)

    monkeypatch.setattr(jsonl_module.fcntl, "flock", flock)
    assert jsonl.sink.append(make_event(2)).seq == 1
    assert len(old.read_text().splitlines()) == 2
    assert [e.seq for e in jsonl.sink.events()] == [1]
    assert jsonl.sink.append(make_event(3)).seq == 2  # and on, in the new file
    assert jsonl.sink.verify().ok


def test_a_short_write_is_completed(jsonl: JsonlStored, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = []

    def write(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:100]))  # at most 100 bytes a call

    monkeypatch.setattr(jsonl_module.os, "write", write)
    assert isinstance(jsonl.sink, JsonlSink)
    stored = jsonl.sink.append_many([make_event(0), make_event(1)])
    assert len(calls) > 2
    assert jsonl.lines() == [f"{e.canonical}\n" for e in stored]
    assert jsonl.sink.verify().ok


def test_write_failure_raises_audit_error_naming_the_sink(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = open_sink(f"jsonl://{blocker}/audit.jsonl")  # parent is a file: cannot be created
    with pytest.raises(AuditError) as info:
        sink.append(make_event(0))
    assert f"audit sink jsonl://{blocker}/audit.jsonl failed:" in str(info.value)


def test_options_best_effort_and_fsync(tmp_path: Path) -> None:
    sink = open_sink(f"jsonl://{tmp_path}/a.jsonl", best_effort="true", fsync=False)
    assert isinstance(sink, JsonlSink)
    assert sink.best_effort is True and sink.fsync is False
    with pytest.raises(AuditError, match="missing path"):
        open_sink("jsonl://")
