"""Cost of masking what steps print: through descriptor 1's masking pipe, against writing to it.

    .venv/bin/python bench/stdio.py [--lines 50000] [--runs 200]

Descriptor 1 is pointed at ``/dev/null`` for the measurement. Three numbers:

- ``os.write`` of ``--lines`` 80-byte lines (one secret among them), straight to the descriptor
  (the baseline, measured in the same run) and while a run with secrets is active, so through
  the pipe, its reader thread and the redactor (``runbook/fdmask.py``); then the time until the
  last line is out (``sync``), so the pipe's lag is counted;
- ``print`` of the same lines, plain and masked (``runbook/stdio.py``'s text layer too);
- what a run with secrets pays once to start and end the masking (``stdio.masked``: two pipes,
  two threads, a sync on each), median of ``--runs``.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runbook import stdio
from runbook.redact import Redactor

SECRET = "s3cr3t-token-value"


@contextmanager
def stdout_to_devnull() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def lines(count: int) -> list[str]:
    out = [f"step output line {i:08d} " + "x" * 51 + "\n" for i in range(count)]
    out[count // 2] = f"token {SECRET} " + "x" * (80 - 8 - len(SECRET)) + "\n"
    return out


def timed(write: Callable[[], None], masked: bool) -> float:
    mask = Redactor([SECRET]).text
    with stdout_to_devnull():
        start = time.perf_counter()
        if masked:
            with stdio.masked(mask):  # the end syncs: every line is out when it returns
                write()
        else:
            write()
            sys.stdout.flush()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    text = lines(args.lines)
    data = [line.encode() for line in text]

    def by_os_write() -> None:
        for chunk in data:
            os.write(1, chunk)

    def by_print() -> None:
        for line in text:
            print(line, end="")

    rows = {}
    for name, write in (("os.write", by_os_write), ("print", by_print)):
        plain = min(timed(write, masked=False) for _ in range(3))
        masked = min(timed(write, masked=True) for _ in range(3))
        rows[name] = {
            "plain_us_per_line": round(plain / args.lines * 1e6, 2),
            "masked_us_per_line": round(masked / args.lines * 1e6, 2),
            "ratio": round(masked / plain, 2),
        }
    mask = Redactor([SECRET]).text
    costs = []
    with stdout_to_devnull():
        for _ in range(args.runs):
            start = time.perf_counter()
            with stdio.masked(mask):
                pass
            costs.append(time.perf_counter() - start)
    per_run_us = statistics.median(costs) * 1e6

    print(f"{'write':10s} {'plain us/line':>14s} {'masked us/line':>15s} {'ratio':>6s}")
    for name, row in rows.items():
        print(
            f"{name:10s} {row['plain_us_per_line']:14.2f} {row['masked_us_per_line']:15.2f} "
            f"{row['ratio']:6.2f}"
        )
    print(f"a run with secrets starts and ends the masking in {per_run_us:.0f} us (median)")
    print(
        json.dumps(
            {
                "bench": "stdio",
                "python": platform.python_version(),
                "lines": args.lines,
                "rows": rows,
                "masking_per_run_us": round(per_run_us, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
