"""Fixtures that start real servers (see infra.py); each test gets its own HAProxy."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from infra import Backend, Exporter, HAProxy, Prometheus


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    servers = {"stable": Backend("stable"), "canary": Backend("canary")}
    yield servers
    for backend in servers.values():
        backend.close()


@pytest.fixture
def haproxy(tmp_path: Path, backends: dict[str, Backend]) -> Iterator[HAProxy]:
    proxy = HAProxy(tmp_path, "web", backends, {"stable": 100, "canary": 0})
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    exp = Exporter()
    yield exp
    exp.close()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, exporter: Exporter
) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{exporter.port}"])
    yield prom
    prom.stop()
