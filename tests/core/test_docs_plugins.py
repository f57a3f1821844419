"""The examples in docs/plugins.md run as written: a plugin package, its test, runbookconf.py."""

from __future__ import annotations

import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

from runbook import Runner, load

PAGE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
BLOCKS = re.findall(r"(<!-- listing -->\n)?```python\n(.*?)```", PAGE.read_text(), re.S)
RUN = [body for listing, body in BLOCKS if not listing]


def _block(marker: str) -> str:
    (body,) = [b for b in RUN if marker in b]
    return body


def test_the_page_has_the_examples_this_test_runs():
    assert len(RUN) == 4


def test_a_hookimpl_may_take_a_subset_of_the_arguments(tmp_path: Path, capsys) -> None:
    plugin = types.ModuleType("subset_plugin")
    exec(_block("``run`` not needed"), plugin.__dict__)
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "rb.py").write_text("from runbook import step\n@step\ndef a():\n    return 1\n")
    Runner(plugins=[plugin], entry_points=False).run(load(tmp_path / "rb.py"))
    assert "a succeeded" in capsys.readouterr().out


@pytest.fixture
def acme_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The page's plugin package, with the two modules it imports lazily stubbed in."""
    package = tmp_path / "src" / "acme_runbook"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_block("# src/acme_runbook/__init__.py"))
    (package / "store.py").write_text(
        textwrap.dedent(
            """
            from runbook.store.memory import MemoryStore

            class VaultStore(MemoryStore):
                def __init__(self, url, **options):
                    super().__init__()
                    self.url = url
            """
        )
    )
    (package / "vault.py").write_text(
        textwrap.dedent(
            """
            CLOSED = []

            class Client:
                def __init__(self, env):
                    self.env = env

                def close(self):
                    CLOSED.append(self.env)

            def client(env):
                return Client(env)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield package
    for name in [m for m in sys.modules if m.startswith("acme_runbook")]:
        del sys.modules[name]


def test_the_plugin_package_and_its_test_run(acme_package: Path, tmp_path: Path) -> None:
    namespace: dict = {}
    exec(_block("def test_vault_store"), namespace)
    (tmp_path / "pyproject.toml").touch()
    namespace["test_vault_store"](tmp_path)  # the page's own test passes
    import acme_runbook.vault

    assert acme_runbook.vault.CLOSED  # the resource's teardown ran


def test_runbookconf_hooks_see_the_runs_below_them(tmp_path: Path, capsys) -> None:
    (tmp_path / "pyproject.toml").touch()
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "runbookconf.py").write_text(_block("# runbooks/runbookconf.py"))
    (folder / "broken.py").write_text(
        "from runbook import step\n@step\ndef deploy():\n    raise RuntimeError('no disk')\n"
    )
    result = Runner(entry_points=False).run(load(folder / "broken.py"))
    assert result.status == "failed"
    assert "broken: deploy failed: RuntimeError: no disk" in capsys.readouterr().out
