"""The memory and file routers, FakeRouter, and the file router's atomicity across processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from runbook.errors import RunbookError, WeightsError
from runbook.plugins import Plugins
from runbook.routers.base import Router
from runbook.routers.file import FileRouter
from runbook.routers.memory import MemoryRouter
from runbook.testing.router import FakeRouter


@pytest.fixture(params=["memory", "file"])
def router(request, tmp_path) -> Router:
    url = (
        f"memory://{uuid.uuid4().hex}"
        if request.param == "memory"
        else (f"file://{tmp_path}/routes/web.json")
    )
    return Plugins(entry_points=False).open("router", url)


def test_router_contract(router):
    assert isinstance(router, Router)
    assert router.weights("web") == {} and router.active("web") is None
    router.set_weights("web", {"stable": 95, "canary": 5})
    assert router.weights("web") == {"stable": 95, "canary": 5}
    assert router.active("web") == "stable"
    router.switch("web", "canary")
    assert router.weights("web") == {"stable": 0, "canary": 100}
    router.switch("api", "blue")
    assert router.weights("api") == {"blue": 100}
    assert router.weights("web") == {"stable": 0, "canary": 100}  # other services untouched
    router.set_weights("web", {"b": 50, "a": 50})
    assert router.active("web") == "a"  # ties: first name, whatever the insertion order


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({}, "weights for 'web' are empty"),
        ({"a": 50, "b": 40}, "must sum to 100, got 90"),
        ({"a": 101, "b": -1}, "weight of web/b must be an integer >= 0, got -1"),
        ({"a": 99.5, "b": 0.5}, "must be an integer >= 0, got 99.5"),
        ({"a": True}, "got True"),
        ({"": 100}, "target names must be non-empty strings"),
    ],
)
def test_bad_weights_are_refused_before_anything_changes(router, weights, message):
    router.set_weights("web", {"stable": 100})
    with pytest.raises(WeightsError, match=message.replace("(", r"\(")) as refused:
        router.set_weights("web", weights)
    assert isinstance(refused.value, ValueError)  # what callers caught before still works
    assert refused.value.exit_code == 2  # a usage error: one line from the CLI, not a traceback
    assert router.weights("web") == {"stable": 100}


def test_bad_names(router):
    with pytest.raises(ValueError, match="service must be a non-empty string"):
        router.set_weights("", {"a": 100})
    with pytest.raises(ValueError, match="switch target must be a non-empty string"):
        router.switch("web", "")


def test_memory_router_is_shared_by_name_only():
    name = f"memory://{uuid.uuid4().hex}"
    MemoryRouter.open(name).set_weights("web", {"blue": 100})
    assert MemoryRouter.open(name).active("web") == "blue"
    assert MemoryRouter.open("memory://").weights("web") == {}
    assert repr(MemoryRouter.open(name)) == f"MemoryRouter({name!r})"


def test_file_router_writes_readable_json_and_no_temp_files(tmp_path):
    router = FileRouter(f"file://{tmp_path}/routes.json")
    router.set_weights("web", {"blue": 100})
    router.switch("web", "green")
    assert json.loads((tmp_path / "routes.json").read_text()) == {"web": {"blue": 0, "green": 100}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.json", "routes.json.lock"]
    assert repr(router) == f"FileRouter('file://{tmp_path}/routes.json')"


def test_file_router_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    FileRouter.open("file://.runbook/routes.json").switch("web", "blue")
    assert (tmp_path / ".runbook" / "routes.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('["web"]', "must hold {service: {target: weight}}"),
        ('{"web": {"blue": "100"}}', "must hold {service: {target: weight}}"),
    ],
)
def test_file_router_refuses_a_corrupt_file(tmp_path, content, message):
    (tmp_path / "routes.json").write_text(content)
    router = FileRouter(f"file://{tmp_path}/routes.json")
    with pytest.raises(RunbookError, match=message.replace("{", r"\{").replace("}", r"\}")):
        router.weights("web")
    with pytest.raises(RunbookError):
        router.switch("web", "blue")
    assert (tmp_path / "routes.json").read_text() == content  # never overwritten


def test_file_router_needs_a_path():
    with pytest.raises(RunbookError, match=r"has no path \(file://PATH\)"):
        FileRouter("file://")


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    router = FileRouter(f"file://{tmp_path}/routes.json")
    router.switch("web", "blue")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("runbook.routers.file.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        router.switch("web", "green")
    assert json.loads((tmp_path / "routes.json").read_text()) == {"web": {"blue": 100}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.json", "routes.json.lock"]


WORKER = textwrap.dedent(
    """
    import json, sys
    from runbook.routers.file import FileRouter
    role, path, service, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    router = FileRouter("file://" + path)
    if role == "write":
        # Many targets make each write large enough to be split across write() calls.
        targets = [f"{service}-target-{i:03d}-" + "x" * 40 for i in range(100)]
        for i in range(n):
            router.set_weights(service, dict.fromkeys(targets[i % 2:] + targets[:i % 2], 1))
            router.set_weights(service + "-last", {"done": 100} if i == n - 1 else {"at": 100})
    else:
        reads = 0
        while reads < n:
            try:
                text = open(path).read()
            except FileNotFoundError:
                continue
            data = json.loads(text)  # raises on a half-written file
            for table in data.values():
                assert sum(table.values()) == 100, table
            reads += 1
        print(reads)
    """
)


@pytest.mark.slow
def test_readers_never_see_partial_json_and_writers_lose_no_update(tmp_path):
    path = str(tmp_path / "routes.json")

    def spawn(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    procs = [
        spawn("write", path, "web", "60"),
        spawn("write", path, "api", "60"),
        spawn("read", path, "-", "400"),
        spawn("read", path, "-", "400"),
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    data = json.loads(Path(path).read_text())
    # Both writers' last updates survived the other's read-modify-write.
    assert data["web-last"] == {"done": 100} and data["api-last"] == {"done": 100}
    assert len(data["web"]) == 100 and len(data["api"]) == 100


def test_fake_router_records_every_call():
    router = FakeRouter({"web": {"stable": 100}})
    router.set_weights("web", {"canary": 5, "stable": 95})
    assert router.active("web") == "stable"
    router.switch("web", "canary")
    assert router.weights("web") == {"canary": 100, "stable": 0}
    assert router.history == [
        ("set_weights", "web", {"canary": 5, "stable": 95}),
        ("active", "web", None),
        ("switch", "web", "canary"),
        ("weights", "web", None),
    ]
    assert router.writes == [
        ("set_weights", "web", {"canary": 5, "stable": 95}),
        ("switch", "web", "canary"),
    ]
    assert router.peek("web") == {"canary": 100, "stable": 0}
    assert len(router.history) == 4  # peek is not a call


def test_fake_router_scripted_failures():
    router = FakeRouter()
    router.fail("switch", ConnectionError("mesh API down"), after=1, times=2)
    router.switch("web", "blue")
    for _ in range(2):
        with pytest.raises(ConnectionError, match="mesh API down"):
            router.switch("web", "green")
    router.switch("web", "green")
    assert router.peek("web") == {"blue": 0, "green": 100}
    assert [c[2] for c in router.writes] == ["blue", "green", "green", "green"]
    with pytest.raises(ValueError, match="FakeRouter has no method 'delete'"):
        router.fail("delete", RuntimeError())
    with pytest.raises(ValueError, match="must sum to 100"):
        FakeRouter({"web": {"a": 1}})
