"""SSH throughput: 20 commands on each of 4 real sshd hosts in parallel, runbook vs bare asyncssh.

    .venv/bin/python bench/ssh.py [-n 20] [--rounds 5]

Starts four ``/usr/sbin/sshd`` on free 127.0.0.1 ports (generated keys in a temporary folder,
stopped by pid at the end) and measures, in the same run:

* ``asyncssh (bare)``: one connection per host, the host's commands one after another, the four
  hosts concurrently: the floor any SSH tool has to pay.
* ``ssh() sync``: the ``ssh`` resource called from four threads, as sync steps and rolling
  callbacks call it (pool, quoting, result building, the thread hop to the pool's loop).
* ``ssh.arun()``: the same from an ``async def`` step.
* ``runbook run``: a whole run, ``rolling`` over the four hosts in one batch whose deploy sends
  the commands: engine, store and audit included.

Connections are opened before timing in every variant, so the figures compare per-command cost.
Each row is the median over ``--rounds``; ``x bare`` is its wall time over the bare loop's
(target: the ``ssh`` resource within 1.5x). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "plugins" / "runbook-ssh" / "tests"))

import asyncssh  # noqa: E402
import sshd  # noqa: E402
from runbook_ssh.resource import SSH  # noqa: E402
from runbook_ssh.settings import Settings  # noqa: E402

from runbook.inventory import load_inventory  # noqa: E402

COMMAND = ["true"]


async def bare(fleet: sshd.Fleet, hosts: list[Any], n: int) -> float:
    conns = [
        await asyncssh.connect(
            "127.0.0.1",
            port=h.port,
            username="root",
            known_hosts=str(fleet.known_hosts),
            client_keys=[str(fleet.client_key)],
            agent_path=None,
        )
        for h in hosts
    ]

    async def one(conn: Any) -> None:
        for _ in range(n):
            result = await conn.run("true", check=False)
            assert result.exit_status == 0

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in conns))
    took = time.perf_counter() - start
    for conn in conns:
        conn.close()
        await conn.wait_closed()
    return took


def resource(settings: Settings, hosts: list[Any], n: int, mode: str) -> float:
    ssh = SSH(settings)
    try:
        for host in hosts:  # connect first, as the bare loop does
            ssh(host, COMMAND)
        start = time.perf_counter()
        if mode == "sync":
            errors: list[BaseException] = []

            def one(host: Any) -> None:
                try:
                    for _ in range(n):
                        ssh(host, COMMAND)
                except BaseException as exc:  # reported after the join
                    errors.append(exc)

            threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]
        else:

            async def all_hosts() -> None:
                async def one(host: Any) -> None:
                    for _ in range(n):
                        await ssh.arun(host, COMMAND)

                await asyncio.gather(*(one(h) for h in hosts))

            asyncio.run(all_hosts())
        took = time.perf_counter() - start
        assert ssh.pool.connects == len(hosts)
        return took
    finally:
        ssh.close()


RUNBOOK = """
from runbook import step
from runbook.strategies import rolling

N = {n}


def warm(host, ssh):
    ssh(host, ["true"])


def commands(host, ssh):
    for _ in range(N):
        ssh(host, ["true"])


warmup = rolling("group:web", batch=4, deploy=warm)
release = rolling("group:web", batch=4, deploy=commands, after=["warmup"])
"""


def whole_run(folder: Path, fleet: sshd.Fleet, n: int) -> float:
    from runbook.config import load_config
    from runbook.plugins import Plugins
    from runbook.runner import Runner

    project = folder / "project"
    project.mkdir(exist_ok=True)
    (project / "runbook.toml").write_text(
        f'inventory = "{fleet.inventory}"\nssh_known_hosts = "{fleet.known_hosts}"\n'
        f'ssh_identity_file = "{fleet.client_key}"\nstore = "memory://"\n'
        'audit = ["memory://"]\nlock = "memory://"\n'
    )
    path = project / "bench_fleet.py"
    path.write_text(RUNBOOK.format(n=n))
    keys = [k for ks in Plugins().hook.runbook_config_keys() for k in (ks or [])]
    config = load_config(project, extra_keys=keys)
    with Runner.from_config(config, actor="bench") as runner:
        result = runner.run(path)
    if result.status != "succeeded":
        raise RuntimeError(f"bench run {result.status}: {result.error}")
    steps = [result.steps[f"release.deploy[web-{i}]"] for i in range(1, 5)]
    starts = min(s.started_at for s in steps)
    ends = max(s.finished_at for s in steps)
    return (ends - starts).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="commands per host (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant (default 3)")
    args = parser.parse_args()
    if not sshd.available():
        print(json.dumps({"bench": "ssh", "skipped": f"{sshd.SSHD} not installed"}))
        return
    folder = Path(tempfile.mkdtemp(prefix="runbook-bench-ssh-"))
    fleet = sshd.start_fleet(folder, 4)
    try:
        hosts = list(load_inventory(fleet.inventory))
        settings = Settings(
            known_hosts=fleet.known_hosts, identity_file=fleet.client_key, user="root"
        )
        variants = {
            "asyncssh (bare)": lambda: asyncio.run(bare(fleet, hosts, args.n)),
            "ssh() sync": lambda: resource(settings, hosts, args.n, "sync"),
            "ssh.arun()": lambda: resource(settings, hosts, args.n, "async"),
            "runbook run": lambda: whole_run(folder, fleet, args.n),
        }
        walls: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits all alike
            for name, measure in variants.items():
                walls[name].append(measure())
    finally:
        fleet.stop()
        sshd.remove(folder)

    base = statistics.median(walls["asyncssh (bare)"])
    rows = []
    for name, samples in walls.items():
        wall = statistics.median(samples)
        rows.append(
            {
                "variant": name,
                "wall_ms": round(wall * 1000, 1),
                "per_command_ms": round(wall / args.n * 1000, 2),
                "overhead_ms": round((wall - base) / args.n * 1000, 2),
                "x_bare": round(wall / base, 2),
            }
        )
    print(
        f"{args.n} commands on each of 4 hosts in parallel, median of {args.rounds} rounds "
        f"(python {platform.python_version()}, asyncssh {asyncssh.__version__}, "
        f"{os.cpu_count()} cpus)"
    )
    print(f"{'variant':<18}{'wall ms':>10}{'ms/cmd':>10}{'+ms/cmd':>10}{'x bare':>9}")
    for r in rows:
        print(
            f"{r['variant']:<18}{r['wall_ms']:>10.1f}{r['per_command_ms']:>10.2f}"
            f"{r['overhead_ms']:>10.2f}{r['x_bare']:>9.2f}"
        )
    target = max(r["x_bare"] for r in rows if r["variant"].startswith("ssh"))
    print(f"ssh resource within 1.5x of bare asyncssh: {'yes' if target <= 1.5 else 'NO'}")
    print(json.dumps({"bench": "ssh", "n": args.n, "hosts": 4, "rounds": args.rounds,
                      "results": rows, "target_x": 1.5, "met": target <= 1.5}))  # fmt: skip


if __name__ == "__main__":
    main()
