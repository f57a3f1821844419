"""Blue-green deploy of a small local web service: a real deploy that runs on any laptop.

Each release is a directory ``releases/<version>/`` with a static site and a tiny HTTP server.
Deploying starts the new release next to the live one, checks its health over HTTP, switches the
``current`` symlink atomically (Capistrano style), and only then stops the old server. Any failure
rolls back in reverse order, so the old release keeps serving. Exactly one server is left running.

Try it (state lives under ``.runbook/deploy-demo`` of the current directory)::

    runbook exec runbooks/deploy.py -p version=1.0
    runbook exec runbooks/deploy.py -p version=1.1
    curl http://127.0.0.1:$(cat .runbook/deploy-demo/active_port)/health   # {"version": "1.1"...}
    runbook exec runbooks/deploy.py -p version=1.2 -p fail_health=true -p health_timeout=2
    # -> exit 1, rolled back; 1.1 still serves
    runbook exec runbooks/deploy.py -p version=1.3 --dry-run   # the plan; changes nothing

Copying this for a real service: replace ``Layout`` with your artifact store, ``LocalServices``
with your process manager or orchestrator, and keep the shape: build, start beside the old one,
health-check, switch atomically, stop the old one last, and a rollback for every step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from runbook import param, probe, resource, rollback, step
from runbook.probes import http_probe, wait_until

# -- parameters -------------------------------------------------------------------------------


def release_version(text: str) -> str:
    """Versions become directory names, so only a safe set of characters gets through."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", text):
        raise ValueError(f"not a safe version name: {text!r}")
    return text


def port_range(text: str) -> str:
    """``0`` (any free port, chosen by the OS) or ``LOW-HIGH`` (first free port in the range)."""
    if text.strip() == "0":
        return "0"
    low, _, high = text.partition("-")
    lo, hi = int(low), int(high or low)
    if not 1024 <= lo <= hi <= 65535:
        raise ValueError(f"expected 0 or LOW-HIGH within 1024-65535, got {text!r}")
    return f"{lo}-{hi}"


version = param("version", type=release_version, help="release to deploy, e.g. 1.4.2")
root = param("root", default=".runbook/deploy-demo", help="state directory (relative to cwd)")
ports = param("ports", type=port_range, default="0", help="0 = any free port, or LOW-HIGH")
health_timeout = param("health_timeout", type=float, default=10.0, help="seconds to get healthy")
fail_health = param("fail_health", type=bool, default=False, help="build a broken release (demo)")

# One deploy at a time per environment: a second run waits (--lock-timeout) or exits 5.
lock = "deploy-demo-{env}"

# -- the release's server ---------------------------------------------------------------------

# Written into every release. It binds a port, then records its pid and port in server.json
# (atomically), so the deploy never has to guess a free port and race another process for it.
SERVER_PY = r"""
import http.server, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
RELEASE = json.load(open(os.path.join(HERE, "release.json")))


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.path.join(HERE, "public"), **kwargs)

    def do_GET(self):
        if self.path != "/health":
            return super().do_GET()
        healthy = RELEASE["healthy"]
        body = json.dumps({"version": RELEASE["version"], "healthy": healthy}).encode()
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    ports, prefer = sys.argv[1], int(sys.argv[2])
    low, _, high = ports.partition("-")
    candidates = [0] if ports == "0" else list(range(int(low), int(high) + 1))
    if prefer:
        candidates.insert(0, prefer)
    for port in candidates:
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
            break
        except OSError:
            continue
    else:
        sys.exit(f"no free port in {ports}")
    info = {"pid": os.getpid(), "port": server.server_address[1], "version": RELEASE["version"]}
    tmp = os.path.join(HERE, "server.json.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, os.path.join(HERE, "server.json"))
    server.serve_forever()


main()
"""

INDEX_HTML = "<!doctype html><title>demo {version}</title><h1>demo release {version}</h1>\n"


# -- resources: the two things a real deploy would swap for its own ---------------------------


@dataclass(frozen=True)
class Layout:
    """Where releases live. ``current`` (a symlink) is the single source of truth for what is
    live; ``active_port`` is derived from it, for a reverse proxy to read."""

    root: Path

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current_link(self) -> Path:
        return self.root / "current"

    @property
    def active_port_file(self) -> Path:
        return self.root / "active_port"

    def release(self, name: str) -> Path:
        return self.releases / name

    def current_release(self) -> Path | None:
        if not self.current_link.is_symlink():
            return None
        return (self.root / os.readlink(self.current_link)).resolve()

    def point_current_at(self, release: Path | None) -> None:
        """Swap the symlink atomically: readers see the old or the new release, never neither."""
        if release is None:
            self.current_link.unlink(missing_ok=True)
            return
        tmp = self.root / f".current.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(release.relative_to(self.root))
        os.replace(tmp, self.current_link)

    def write_active_port(self, port: int | None) -> None:
        if port is None:
            self.active_port_file.unlink(missing_ok=True)
            return
        tmp = self.root / f".active_port.{os.getpid()}.tmp"
        tmp.write_text(f"{port}\n")
        os.replace(tmp, self.active_port_file)


def server_info(release: Path) -> dict[str, Any] | None:
    try:
        return json.loads((release / "server.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


class LocalServices:
    """Starts and stops release servers as detached local processes (they outlive the run)."""

    start_timeout = 10.0

    def start(self, release: Path, ports: str, prefer: int = 0) -> dict[str, Any]:
        (release / "server.json").unlink(missing_ok=True)
        with open(release / "server.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(release / "server.py"), ports, str(prefer)],
                cwd=release,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not killed by the Ctrl-C meant for `runbook exec`
            )
        # Bounded wait for a real process to bind its port; not a clock-driven step wait.
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            info = server_info(release)
            if info and info["pid"] == proc.pid:
                return info
            if proc.poll() is not None:
                tail = (release / "server.log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"server for {release.name} exited {proc.returncode}: {tail}")
            time.sleep(0.02)
        proc.kill()
        raise TimeoutError(f"server for {release.name} bound no port in {self.start_timeout}s")

    def is_running(self, pid: int, release: Path) -> bool:
        """True if ``pid`` is alive *and* is this release's server (pids get reused)."""
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        proc = Path(f"/proc/{pid}")
        if proc.exists():  # Linux: a zombie is dead, and a recycled pid is someone else
            if _proc_state(proc) == "Z":
                return False
            return str(release / "server.py") in (proc / "cmdline").read_bytes().decode(
                errors="replace"
            )
        return True

    def stop(self, pid: int, release: Path, timeout: float = 5.0) -> None:
        if not self.is_running(pid, release):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._gone(pid):
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
        (release / "server.json").unlink(missing_ok=True)

    @staticmethod
    def _gone(pid: int) -> bool:
        try:  # reap it if it is our child, otherwise it would linger as a zombie
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return True
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # Not our child: dead but not yet reaped by its parent (init) still counts as gone.
        return _proc_state(Path(f"/proc/{pid}")) == "Z"


def _proc_state(proc: Path) -> str | None:
    try:  # /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces, so split after ")"
        return proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@resource
def layout(params) -> Layout:
    return Layout(Path(params.root).resolve())


@resource
def services() -> LocalServices:
    return LocalServices()


# -- steps ------------------------------------------------------------------------------------


@probe
def current(layout, services):
    """What is live: the release ``current`` points at, and whether its server runs.

    A probe is read-only, so it also runs in --dry-run and the plan shows real state.
    """
    release = layout.current_release()
    if release is None:
        return None
    info = server_info(release) or {}
    pid, port = info.get("pid"), info.get("port")
    running = bool(pid) and services.is_running(pid, release)
    return {
        "version": release.name,
        "path": str(release),
        "pid": pid,
        "port": port,
        "running": running,
    }


def needs_deploy(current, params) -> bool:
    """Deploying the version that is already live and running is a no-op, not a restart."""
    return current is None or current["version"] != params.version or not current["running"]


@step(when=needs_deploy, reversible=True)
def build(layout, params, current):
    """Assemble releases/<version>/ in a temp dir, then rename it into place."""
    target = layout.release(params.version)
    replaced_current = current is not None and current["path"] == str(target)
    tmp = layout.releases / f".{params.version}.tmp"
    _remove_tree(tmp)
    (tmp / "public").mkdir(parents=True)
    (tmp / "public" / "index.html").write_text(INDEX_HTML.format(version=params.version))
    (tmp / "server.py").write_text(SERVER_PY)
    release = {"version": params.version, "healthy": not params.fail_health}
    (tmp / "release.json").write_text(json.dumps(release))
    if target.exists():
        _remove_tree(target)  # a stale build of this version, or the crashed live one
    tmp.rename(target)
    return {"version": params.version, "path": str(target), "replaced_current": replaced_current}


@rollback(build)
def remove_build(build, layout, params):
    if build is None:  # build itself failed: only its temp dir can be left (the rename is last)
        _remove_tree(layout.releases / f".{params.version}.tmp")
        return
    if not build["replaced_current"]:  # never delete what `current` points at
        _remove_tree(Path(build["path"]))


@step(reversible=True)
def start(build, params, services):
    """Start the new release beside the live one, on its own port."""
    info = services.start(Path(build["path"]), params.ports)
    url = f"http://127.0.0.1:{info['port']}"
    return {"version": build["version"], "pid": info["pid"], "port": info["port"], "url": url}


@rollback(start)
def stop_new(start, build, services):
    if start is None:  # start itself failed: services.start gave us no process to stop
        return
    services.stop(start["pid"], Path(build["path"]))


@step
def health(start, http, clock, ctx, params):
    """Poll /health with backoff until it answers 200 with the right version, or give up.

    Anything short of that (refused, 503, the wrong version) is "not yet"; at the timeout the
    step fails with the last thing seen, and the run rolls back.
    """
    url = f"{start['url']}/health"

    def check():
        return http_probe(url, client=http, expect=lambda b: b.get("version") == start["version"])

    result = wait_until(
        check,
        timeout=params.health_timeout,
        backoff=0.1,
        max_backoff=1.0,
        clock=clock,
        progress=ctx.progress,
        message=f"waiting for {url}",
    )
    return {"url": url, "detail": result.detail}


@step(after=[health], reversible=True)
def switch(build, start, current, layout, ctx):
    """The commit point: one atomic symlink swap moves traffic to the new release."""
    before = layout.current_release()
    layout.point_current_at(Path(build["path"]))
    layout.write_active_port(start["port"])
    ctx.record_change("current", before=before.name if before else None, after=build["version"])
    return {"from": before.name if before else None, "to": build["version"], "port": start["port"]}


@rollback(switch)
def switch_back(switch, current, layout):
    if switch is None:  # switch itself failed half-way: put back what was live before it
        switch = {"from": current["version"] if current else None}
    if switch["from"] is None:
        layout.point_current_at(None)
        layout.write_active_port(None)
        return
    previous = layout.release(switch["from"])
    layout.point_current_at(previous)
    info = server_info(previous)  # restart_old may have given it a new port
    layout.write_active_port(info["port"] if info else None)


@step(when=lambda current: current is not None and current["running"], reversible=True)
def stop_old(switch, current, services):
    """Only after the switch: the old release served until the new one took over."""
    services.stop(current["pid"], Path(current["path"]))
    return {"version": current["version"], "pid": current["pid"], "port": current["port"]}


@rollback(stop_old)
def restart_old(stop_old, current, params, services):
    services.start(Path(current["path"]), params.ports, prefer=current["port"] or 0)


@step(after=[stop_old], retries=2, backoff=0.5)
def verify(switch, layout, http, ctx):
    """End to end, the way a user gets there: through active_port, not the new server's port."""
    port = int(layout.active_port_file.read_text())
    response = http.get(f"http://127.0.0.1:{port}/health")
    assert response.status_code == 200, f"/health answered {response.status_code}"
    served = response.json().get("version")
    assert served == switch["to"], f"serving {served!r}, expected {switch['to']!r}"
    page = http.get(f"http://127.0.0.1:{port}/")
    assert switch["to"] in page.text, "index page does not show the new version"
    ctx.progress(f"{served} is live at http://127.0.0.1:{port}/")
    return {"port": port, "version": served}


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# -- `pytest --runbooks runbooks/` runs this file with these fakes: no processes, no network ----


class FakeServices(LocalServices):
    """Pretends to run release servers: a release "runs" while its server.json exists."""

    def start(self, release: Path, ports: str, prefer: int = 0) -> dict[str, Any]:
        port = prefer or 20000 + len(list(release.parent.glob("*/server.json")))
        info = {"pid": port, "port": port, "version": release.name}
        (release / "server.json").write_text(json.dumps(info))
        return info

    def is_running(self, pid: int, release: Path) -> bool:
        info = server_info(release)
        return bool(info) and info["pid"] == pid

    def stop(self, pid: int, release: Path, timeout: float = 5.0) -> None:
        (release / "server.json").unlink(missing_ok=True)


def fake_http(root: Path) -> httpx.Client:
    """Answers for the fake servers from their release files, as server.py would."""

    def answer(request: httpx.Request) -> httpx.Response:
        for info_file in root.glob("releases/*/server.json"):
            if json.loads(info_file.read_text())["port"] == request.url.port:
                release = info_file.parent
                break
        else:
            raise httpx.ConnectError("connection refused", request=request)
        built = json.loads((release / "release.json").read_text())
        if request.url.path == "/health":
            return httpx.Response(200 if built["healthy"] else 503, json=built)
        return httpx.Response(200, text=(release / "public" / "index.html").read_text())

    return httpx.Client(transport=httpx.MockTransport(answer))


TEST = {
    "params": {"version": "1.0"},
    "resources": {
        "layout": lambda tmp: Layout(tmp / "deploy"),
        "services": lambda tmp: FakeServices(),
        "http": lambda tmp: fake_http(tmp / "deploy"),
    },
}
