"""Small runbooks the CLI tests write into a throwaway project."""

GREET = '''
"""Greets into a file; for CLI tests."""
from pathlib import Path

from runbook import param, probe, rollback, step

name = param("name", default="world", help="who to greet")
count = param("count", type=int, default=1, choices=range(1, 5), help="how many times")
token = param("token", secret=True, default="s3cret-value", help="api token")

lock = "greet-{env}"


@probe
def look():
    return {"exists": Path("out.txt").exists()}


@step(reversible=True, tags=["write"])
def write(look, params):
    Path("out.txt").write_text(f"hello {params.name}\\n" * params.count)
    return {"path": "out.txt"}


@rollback(write)
def unwrite(write):
    Path(write["path"]).unlink()


@step(when=lambda look: look["exists"])
def already(look):
    return "was there"


@step(after=[write], retries=2, timeout=5, lock="check-{params.name}")
def check():
    assert Path("out.txt").read_text().startswith("hello")
'''

FAILING = '''
"""The second step fails, so the first is rolled back."""
from pathlib import Path

from runbook import rollback, step


@step(reversible=True)
def stage():
    Path("staged").write_text("yes")
    return {"file": "staged"}


@rollback(stage)
def unstage(stage):
    Path(stage["file"]).unlink()
    Path("unstaged").write_text("yes")


@step
def switch(stage):
    assert False, "traffic did not move"
'''

ROLLBACK_FAILS = '''
"""A failure whose rollback fails too: manual intervention needed."""
from runbook import rollback, step


@step(reversible=True)
def stage():
    return {"ok": True}


@rollback(stage)
def unstage(stage):
    raise RuntimeError("cannot reach the registry")


@step
def switch(stage):
    raise RuntimeError("boom")
'''

GATED = '''
"""A gate in the middle."""
from pathlib import Path

from runbook import rollback, step


@step(reversible=True)
def prepare():
    Path("prepared").write_text("yes")
    return {"ok": True}


@rollback(prepare)
def unprepare(prepare):
    Path("prepared").unlink()
    Path("unprepared").write_text("yes")


@step(approval=True)
def migrate(prepare):
    Path("migrated").write_text("yes")
    return {"migrated": True}
'''

WAITS = '''
"""A step that waits for a file, to be interrupted."""
import asyncio
import time
from pathlib import Path

from runbook import param, rollback, step

mode = param("mode", default="async", choices=["async", "sync", "clock"])


@step(reversible=True)
def prepare():
    Path("prepared").write_text("yes")
    return {"ok": True}


@rollback(prepare)
def unprepare(prepare):
    Path("prepared").unlink()
    Path("rolled-back").write_text("yes")


@step
async def wait_async(prepare, params):
    if params.mode != "async":
        return None
    Path("waiting").write_text("yes")
    while not Path("go").exists():
        await asyncio.sleep(0.02)


@step
def wait_sync(wait_async, params):
    if params.mode != "sync":
        return None
    Path("waiting").write_text("yes")
    while not Path("go").exists():
        time.sleep(0.02)


@step
def wait_clock(wait_sync, params, clock):
    # the documented cooperative wait of a sync step: interruptible by Ctrl-C
    if params.mode != "clock":
        return None
    Path("waiting").write_text("yes")
    clock.sleep(60)
    Path("slept-through").write_text("yes")
'''

BROKEN_IMPORT = """
import no_such_module_for_runbook_tests  # noqa
"""

BROKEN_DEFINITION = """
from runbook import step


@step
def first(nonexistent_thing):
    return 1
"""
