"""What a signed approval gate costs: approve + resume of a signed gate vs. the same run ungated.

    .venv/bin/python bench/approvals.py [-n 20] [--ssh-keygen] [--durability process]

One project in a temporary directory (SQLite store, JSONL audit, file locks), an env with
``signers`` and a fresh ed25519 key made by ``ssh-keygen``. Each round runs the same runbook
(a probe and two steps) twice: once without a gate (the baseline) and once with a gate that
pauses, is approved with a signature (sign + verify) and resumed (plan rebuilt, probe re-run,
signature re-verified). The overhead is gated minus ungated, per round.
An unencrypted ed25519 key is signed and verified in this process (runbook.sshsig, with
``cryptography``); ``--ssh-keygen`` forces the ``ssh-keygen -Y`` processes instead (what every
key cost before, and what agent, encrypted, FIDO and non-ed25519 keys still cost), so both can
be compared under the same load. The table shows one signature and one verification alone, so
their share can be told from the engine's own cost of pausing and resuming (extra audit events
and store writes, each made durable with an fsync, and the probe run again). Prints a table,
then one JSON line for tooling.

Where the time goes (profiled with cProfile, 2026-12-01, 2 shared cpus): with ssh-keygen, the two
processes were 10-35 ms of a gate (fork+exec of a large Python process is most of it under load);
in-process they are ~0.25 ms. What is left is durability: the gated run makes 19 fsync'd audit
appends where the ungated one makes 8, and about twice its SQLite write commits
(synchronous=FULL), so the overhead moves with the disk's fsync latency (10x between a quiet and
a busy machine) more than with anything the gate computes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from runbook.config import load_config
from runbook.runner import Runner

RUNBOOK = """
from runbook import Approval, probe, step

@probe
def replicas():
    return 3

@step
def prepare(replicas):
    return replicas

@step(approval=GATE)
def switch(prepare):
    return prepare
"""

CONFIG = """
store = "sqlite:///.runbook/runbook.db"
audit = ["jsonl://.runbook/audit.jsonl"]
lock = "file://.runbook/locks"

[env.prod]
protection = "strict"
signers = "allowed_signers"
approvers = ["bob"]
"""


def setup(root: Path, durability: str = "power") -> Path:
    (root / "runbook.toml").write_text(f'durability = "{durability}"\n' + CONFIG)
    key = root / "bob"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bob", "-f", str(key)],
        check=True,
        timeout=30,
    )
    keytype, blob = (root / "bob.pub").read_text().split()[:2]
    (root / "allowed_signers").write_text(f'bob namespaces="runbook" {keytype} {blob}\n')
    (root / "plain.py").write_text(RUNBOOK.replace("GATE", "None"))
    (root / "gated.py").write_text(RUNBOOK.replace("GATE", "Approval(allow_self=False)"))
    return key


def ungated(r: Runner, root: Path) -> float:
    start = time.perf_counter()
    result = r.run(root / "plain.py")
    elapsed = time.perf_counter() - start
    assert result.status == "succeeded", result.error
    return elapsed


def gated(r: Runner, root: Path, key: Path) -> tuple[float, float, float]:
    """Seconds for: the run up to its gate, the signed approve, the resume to the end.

    One Runner for everything (as for the baseline), so Python start-up and plugin loading,
    which a separate ``runbook approve`` process would pay, are not counted: they are the same
    for any command. The approver is bob because the key is his (the signature says so).
    """
    t0 = time.perf_counter()
    paused = r.run(root / "gated.py")
    t1 = time.perf_counter()
    assert paused.status == "paused", paused.error
    r.approve(paused.run_id, sign=str(key))
    t2 = time.perf_counter()
    done = r.resume(paused.run_id)
    t3 = time.perf_counter()
    assert done.status == "succeeded", done.error
    return t1 - t0, t2 - t1, t3 - t2


def keygen_calls(root: Path, key: Path, n: int) -> tuple[list[float], list[float]]:
    """One signature and one verification alone: the share of the signing mechanism."""
    from runbook import signing

    message = signing.payload(
        run_id="r", step="s", decision="granted", plan_hash="0" * 64, actor="bob", at="2026"
    )
    signs, verifies = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        signature = signing.sign(message, key)
        t1 = time.perf_counter()
        signing.verify(message, signature, root / "allowed_signers", claimed="bob", at=None)
        t2 = time.perf_counter()
        signs.append(t1 - t0)
        verifies.append(t2 - t1)
    return signs, verifies


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="rounds (default 20)")
    parser.add_argument(
        "--ssh-keygen", action="store_true", help="sign and verify with ssh-keygen processes"
    )
    parser.add_argument(
        "--durability",
        choices=("power", "process"),
        default="power",
        help="the project's durability: 'process' takes the disk's fsync latency out",
    )
    args = parser.parse_args()
    from runbook import sshsig

    if args.ssh_keygen:
        sshsig.available = lambda: False  # type: ignore[assignment]
    how = "in-process" if sshsig.available() else "ssh-keygen"
    with tempfile.TemporaryDirectory(prefix="runbook-bench-approvals-") as tmp:
        root = Path(tmp)
        key = setup(root, args.durability)
        cwd = os.getcwd()
        os.chdir(root)
        r = Runner.from_config(load_config(root), env="prod", actor="alice")
        try:
            ungated(r, root), gated(r, root, key)  # warm-up: imports, schema, first ssh-keygen
            base, up_to_gate, approve, resume, overhead = [], [], [], [], []
            for _ in range(args.n):
                b = ungated(r, root)
                g = gated(r, root, key)
                base.append(b)
                up_to_gate.append(g[0])
                approve.append(g[1])
                resume.append(g[2])
                overhead.append(sum(g) - b)
            signs, verifies = keygen_calls(root, key, args.n)
        finally:
            r.close()
            os.chdir(cwd)
    rows = {
        "run without a gate (baseline)": ms(base),
        "run up to the gate": ms(up_to_gate),
        "approve --sign (signs once)": ms(approve),
        "resume (probe, plan, one verify)": ms(resume),
        "overhead of the signed gate": ms(overhead),
        f"of which: one sign ({how})": ms(signs),
        f"of which: one verify ({how})": ms(verifies),
    }
    print(
        f"signed approval gate ({how}, durability {args.durability}), n={args.n}, medians "
        f"(python {platform.python_version()}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f})"
    )
    for label, value in rows.items():
        print(f"{label:<38}{value:>10.2f} ms")
    budget = 50.0
    verdict = "within" if rows["overhead of the signed gate"] < budget else "OVER"
    print(f"{verdict} the {budget:.0f} ms budget")
    print(
        json.dumps(
            {
                "bench": "approvals",
                "n": args.n,
                "signing": how,
                "durability": args.durability,
                "median_ms": rows,
                "overhead_ms": rows["overhead of the signed gate"],
                "budget_ms": budget,
                "load": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
