"""``--junitxml PATH``: a run as a JUnit XML report, one test case per step, as pytest writes it.

CI systems (GitHub, GitLab, Jenkins) show a JUnit file as a test report, so a failed deploy shows
up where a failed test would: which step, with what message. A step that failed, was rolled back
(it had succeeded, then was undone), failed to roll back, was denied or cancelled is a
``<failure>``; one interrupted by a stop is an ``<error>``; skipped, awaiting approval, planned
(dry run) and not run are ``<skipped>``. Everything comes from ``RunResult.to_dict()``, which is
already masked: no secret reaches the file.
"""

from __future__ import annotations

import os
import socket
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import click

FAILURES = {
    "failed": "failed",
    "rolled_back": "rolled back",
    "rollback_failed": "rollback failed",
    "denied": "approval denied",
    "cancelled": "cancelled",
}
SKIPS = {
    "skipped": "skipped",
    "awaiting_approval": "awaiting approval",
    "planned": "would run (dry run)",
    "pending": "not run",
}


def _first_line(text: str | None) -> str:
    stripped = (text or "").strip()
    return stripped.splitlines()[0] if stripped else ""


def _case(suite: ET.Element, classname: str, step: dict[str, Any], run: dict[str, Any]) -> str:
    """One ``<testcase>``; returns its outcome: pass, failure, error or skipped."""
    case = ET.SubElement(
        suite,
        "testcase",
        classname=classname,
        name=step["name"],
        time=f"{step.get('duration') or 0:.3f}",
    )
    status = step.get("status", "pending")
    error = step.get("error")
    if status in FAILURES:
        why = FAILURES[status]
        if status == "rolled_back":
            detail = _first_line(run.get("error"))
            message = f"rolled back after: {detail}" if detail else why
        elif status == "rollback_failed":
            message = f"rollback failed: {_first_line(step.get('rollback_error') or error)}"
        else:
            message = f"{why}: {_first_line(error or step.get('reason'))}".rstrip(": ")
        failure = ET.SubElement(case, "failure", message=message, type=status)
        failure.text = _body(step) or message
        return "failure"
    if status == "running":
        ET.SubElement(case, "error", message="interrupted: the run stopped while it ran")
        return "error"
    if status in SKIPS:
        reason = step.get("reason")
        message = SKIPS[status] + (f" ({reason})" if reason and reason != status else "")
        ET.SubElement(case, "skipped", message=message, type=status)
        return "skipped"
    return "pass"


def _body(step: dict[str, Any]) -> str:
    """The whole story of a failure: error, the runbook line, the command's stderr, traceback."""
    parts = []
    if step.get("error"):
        parts.append(str(step["error"]))
    if step.get("where"):
        parts.append(f"at {step['where']}")
    if step.get("stderr"):
        parts.append("stderr (last lines):\n" + str(step["stderr"]))
    if step.get("traceback"):
        parts.append(str(step["traceback"]))
    return "\n\n".join(parts)


def render_junit(result: Any) -> bytes:
    """The JUnit XML document for ``result`` (a ``RunResult``)."""
    run = result.to_dict()
    name = Path(run.get("runbook") or "runbook").stem
    suites = ET.Element("testsuites", name="runbook")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=name,
        timestamp=run.get("started_at") or "",
        hostname=socket.gethostname(),
    )
    props = ET.SubElement(suite, "properties")
    for key in ("run_id", "status", "env", "actor", "runbook"):
        ET.SubElement(props, "property", name=key, value=str(run.get(key) or ""))
    counts = {"pass": 0, "failure": 0, "error": 0, "skipped": 0}
    for step in run.get("steps", {}).values():
        counts[_case(suite, name, step, run)] += 1
    suite.set("tests", str(sum(counts.values())))
    suite.set("failures", str(counts["failure"]))
    suite.set("errors", str(counts["error"]))
    suite.set("skipped", str(counts["skipped"]))
    suite.set("time", f"{run.get('duration') or 0:.3f}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def write_junit(result: Any, path: Path) -> None:
    """Write the report atomically: a CI step reading it never sees half a file.

    A report that cannot be written is one line on stderr; the exit code stays the run's, because
    the run happened and that is what the caller must act on.
    """
    path = Path(path)
    data = render_junit(result)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        click.echo(
            f"runbook: warning: --junitxml {path}: not written: {exc.strerror or exc}", err=True
        )
