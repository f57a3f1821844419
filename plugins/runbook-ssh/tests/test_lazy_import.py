"""Asking the plugin for its resources (every collection and every command does) does not import
asyncssh; the first run that uses ``ssh`` does."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_the_resource_names_come_without_asyncssh():
    out = _run(
        """
        import sys
        from runbook.plugins import Plugins
        assert "ssh" in Plugins().resources()
        print("asyncssh" in sys.modules)
        """
    )
    assert out == "False"


def test_the_resource_imports_asyncssh_when_a_run_opens_it_and_closes_it_after():
    out = _run(
        """
        import sys
        from runbook.plugins import Plugins
        import runbook_ssh.resource as real

        closed = []
        class Fake:
            def __init__(self, settings, **kwargs):
                self.kwargs = kwargs
            def close(self):
                closed.append(True)
        real.SSH = Fake
        factory = Plugins().resources()["ssh"]
        gen = factory(ctx=None, clock="clock", hosts="fleet")
        value = next(gen)
        assert isinstance(value, Fake) and value.kwargs["clock"] == "clock"
        assert next(gen, "done") == "done"
        print("asyncssh" in sys.modules, closed)
        """
    )
    assert out == "True [True]"
