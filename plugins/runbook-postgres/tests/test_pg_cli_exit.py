"""A ``runbook`` command against ``postgresql://`` closes its connection pools before it exits.

A pool left open is finalised at interpreter exit, after its worker threads are gone, and its
``__del__`` may print "Exception ignored in..." (or not: it depends on the order of teardown,
which made a CLI test intermittent). Checked deterministically: at exit, in a real ``runbook``
process, no ``psycopg_pool`` pool it created is still open, whether the command succeeded or failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.service, pytest.mark.slow]

PROBE = """
import atexit, sys
import psycopg_pool

made = []  # every pool the command creates (kept alive here, so none is collected unseen)
_init = psycopg_pool.ConnectionPool.__init__

def _track(self, *args, **kwargs):
    made.append(self)
    _init(self, *args, **kwargs)

psycopg_pool.ConnectionPool.__init__ = _track

def _check():
    print(f"pools {len(made)} open {sum(not p.closed for p in made)}", file=sys.stderr)

atexit.register(_check)
sys.argv = ["runbook", *sys.argv[1:]]
from runbook.cli import main
main()
"""


def runbook(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "dev", "-c", PROBE, *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [(["runs"], 0), (["show", "20300101-000000-nosuch"], None), (["audit", "verify"], 0)],
)
def test_a_command_closes_its_postgres_pools_before_exit(
    tmp_path: Path, pg_url: str, args: list[str], code: int | None
) -> None:
    (tmp_path / "runbook.toml").write_text(f'store = "{pg_url}"\naudit = ["{pg_url}"]\n')
    done = runbook(tmp_path, *args)
    if code is not None:
        assert done.returncode == code, done.stderr
    else:
        assert done.returncode != 0 and "nosuch" in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    opened, _, still_open = last.removeprefix("pools ").partition(" open ")
    assert int(opened) >= 1, done.stderr  # the command did open the store and audit pools
    assert still_open == "0", done.stderr
    assert "Exception ignored" not in done.stderr
