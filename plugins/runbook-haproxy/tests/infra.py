"""Real servers for the integration tests: HAProxy, two HTTP backends, Prometheus, an exporter.

Everything listens on 127.0.0.1 on a free port, is bounded in time, and is stopped by pid (or
shut down, for the in-process HTTP servers) when the test ends. A missing binary skips the test,
except under ``CI=true``, where it fails: a CI machine must not pass by skipping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

HAPROXY = "/usr/sbin/haproxy"
PROMETHEUS = "/usr/bin/prometheus"


def need_binary(path: str) -> str:
    if os.access(path, os.X_OK):
        return path
    message = f"{path} is not installed"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a missing server fails instead of skipping)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} not ready after {timeout}s")


class Backend:
    """A tiny HTTP server that answers with its name, or with 500 once told to fail."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False
        self.hits = 0
        self.errors = 0
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with backend._lock:
                    backend.hits += 1
                    failing = backend.failing
                    if failing:
                        backend.errors += 1
                body = backend.name.encode()
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def error_ratio(self) -> float:
        with self._lock:
            return self.errors / self.hits if self.hits else 0.0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class Process:
    """A server process started by a test and stopped by its pid."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class HAProxy:
    """``haproxy -db`` with one frontend and backend ``service`` of two servers."""

    def __init__(
        self, tmp: Path, service: str, servers: dict[str, Backend], weights: dict[str, int]
    ) -> None:
        binary = need_binary(HAPROXY)
        self.api_port = free_port()
        self.port = free_port()
        self.socket = tmp / "admin.sock"
        lines = [
            "global",
            f"    stats socket ipv4@127.0.0.1:{self.api_port} level admin",
            f"    stats socket {self.socket} mode 600 level admin",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 10s",
            "    timeout server 10s",
            "frontend fe",
            f"    bind 127.0.0.1:{self.port}",
            f"    default_backend {service}",
            f"backend {service}",
            "    balance roundrobin",
        ]
        for name, backend in servers.items():
            lines.append(f"    server {name} 127.0.0.1:{backend.port} weight {weights[name]}")
        self.config = tmp / "haproxy.cfg"
        self.config.write_text("\n".join(lines) + "\n")
        self.process = Process([binary, "-db", "-f", str(self.config)], tmp / "haproxy.log")
        try:
            wait_for(self._ready, 10, "haproxy")
        except AssertionError:
            self.process.stop()
            raise AssertionError(f"haproxy did not start:\n{self.process.output()}") from None

    @property
    def url(self) -> str:
        return f"haproxy://127.0.0.1:{self.api_port}"

    @property
    def unix_url(self) -> str:
        return f"haproxy+unix://{self.socket}"

    def _ready(self) -> bool:
        assert self.process.alive(), self.process.output()
        with socket.create_connection(("127.0.0.1", self.api_port), timeout=1):
            return self.socket.exists()

    def stop(self) -> None:
        self.process.stop()


def split(port: int, requests: int) -> dict[str, int]:
    """Send ``requests`` GETs through HAProxy on one keep-alive connection; count who answered."""
    counts: dict[str, int] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for _ in range(requests):
            answer = client.get("/").text
            counts[answer] = counts.get(answer, 0) + 1
    return counts


class Exporter:
    """A prometheus_client exporter on its own registry. ``watch(test, backends)`` exports each
    backend's share of 5xx answers as ``app_error_ratio{test=..., server=...}`` (0 before any
    request), computed at scrape time from what the backends really answered."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.watched: dict[str, dict[str, Backend]] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    def watch(self, test: str, backends: dict[str, Backend]) -> None:
        self.watched[test] = backends

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "app_error_ratio", "share of requests answered with a 5xx", labels=["test", "server"]
        )
        for test, backends in list(self.watched.items()):
            for name, backend in backends.items():
                family.add_metric([test, name], backend.error_ratio)
        yield family

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Traffic:
    """Requests through HAProxy from a background thread, as long as the test runs (bounded)."""

    def __init__(self, port: int, limit: float = 60.0) -> None:
        self.port = port
        self.limit = limit
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=2) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    client.get("/")
                    self.sent += 1
                except httpx.HTTPError:
                    pass
                self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Prometheus:
    """Prometheus scraping ``targets`` every second, with its TSDB in ``tmp``."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        binary = need_binary(PROMETHEUS)
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 900ms\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: app\n"
            "    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.process = Process(args, tmp / "prometheus.log")
        try:
            wait_for(self._ready, 20, "prometheus")
        except AssertionError:
            self.process.stop()
            raise AssertionError(f"prometheus did not start:\n{self.process.output()}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        assert self.process.alive(), self.process.output()
        return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200

    def value(self, query: str) -> float | None:
        data = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=2).json()
        result = data["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, query: str, check: Callable[[float], bool], timeout: float = 10) -> None:
        """Wait until Prometheus has scraped a value for ``query`` that passes ``check``."""

        def seen() -> bool:
            value = self.value(query)
            return value is not None and check(value)

        wait_for(seen, timeout, f"prometheus value for {query}")

    def stop(self) -> None:
        self.process.stop()
