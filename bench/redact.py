"""Cost of masking: the one redaction path (every encoding, any case) against plain replacement.

    .venv/bin/python bench/redact.py [--secrets 3] [--size 4096] [--rounds 2000]

Masks a step-output-like value (a dict of strings totalling ``--size`` characters, a secret in
one of them) with ``runbook.redact.Redactor`` and, as the baseline measured in the same run, with
the naive ``str.replace`` loop over the plain secrets (what redaction was before it knew about
encodings and case). Prints microseconds per value as a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import time
from collections.abc import Callable
from typing import Any

from runbook.redact import Redactor


def naive(values: list[str]) -> Callable[[Any], Any]:
    def mask(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, str):
            for secret in values:
                value = value.replace(secret, "***")
        return value

    return mask


def sample(size: int, secret: str) -> dict[str, str]:
    chunk = "deployctl install web-green 1.4.2 --replicas 6 ok\n"
    fields = {f"line{i}": chunk for i in range(max(1, size // len(chunk)))}
    fields["header"] = f"Bearer {secret}"
    return fields


def per_call(mask: Callable[[Any], Any], value: Any, rounds: int) -> float:
    mask(value)  # warm up (regex compiled, caches filled)
    began = time.perf_counter()
    for _ in range(rounds):
        mask(value)
    return (time.perf_counter() - began) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    values = [secrets.token_urlsafe(24) for _ in range(args.secrets)]
    value = sample(args.size, values[0])
    redactor = Redactor(values)
    assert "***" in redactor(value)["header"]
    baseline = per_call(naive(values), value, args.rounds)
    ours = per_call(redactor, value, args.rounds)
    build = per_call(lambda _: Redactor(values), None, max(1, args.rounds // 10))
    print(f"{'masking':<40} {'us/value':>10}")
    print(f"{'baseline: str.replace, plain only':<40} {baseline:>10.1f}")
    print(f"{'Redactor: all encodings, any case':<40} {ours:>10.1f}")
    print(f"{'Redactor(...) construction':<40} {build:>10.1f}")
    print(
        json.dumps(
            {
                "bench": "redact",
                "secrets": args.secrets,
                "size": args.size,
                "baseline_us": round(baseline, 2),
                "redactor_us": round(ours, 2),
                "construct_us": round(build, 2),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
