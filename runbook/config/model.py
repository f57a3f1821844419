"""The settings model: what a configuration file may say, once it has been validated.

``Config`` (the whole file), ``EnvConfig`` (one ``[env.NAME]`` section) and ``SinkConfig`` (one
audit sink), and the tables of the keys each may hold: ``runbook.config.validate`` refuses any
other key, and docs/configuration.md documents exactly these (tests/test_config.py checks both).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from runbook.protection import Protection

DEFAULT_ENV = "dev"
# The audit sink when none is configured, as a file would say it (relative to the project root).
DEFAULT_AUDIT = "jsonl://.runbook/audit.jsonl"
PAUSED_LEASE = 7 * 24 * 3600.0  # seconds a paused run keeps its run lock (7 days)

# fmt: off
TOP_KEYS = ("store", "audit", "audit_key", "notify", "templates", "lock", "lock_timeout",
            "lease", "keep_lock_when_paused", "paused_lease", "router", "default_env", "plugins",
            "env", "groups", "inventory", "metrics", "executor", "durability")
# fmt: on
PROTECTION_FLAGS = tuple(f.name for f in fields(Protection) if f.name != "level")
ENV_KEYS = ("protection", "params", "approvers", "signers", *PROTECTION_FLAGS)
SINK_KEYS = ("url", "best_effort")
# What a committed write survives: "power" (fsync / synchronous=FULL: power loss, OS crash) or
# "process" (page cache / synchronous=NORMAL: kill -9 and a crash of runbook, not power loss).
DURABILITY = ("power", "process")


@dataclass(frozen=True)
class SinkConfig:
    url: str
    best_effort: bool = False


@dataclass(frozen=True)
class EnvConfig:
    name: str
    protection: Protection
    params: dict[str, Any]
    approvers: tuple[str, ...]
    # git's allowed_signers file: decisions in this env must be signed by a key listed there.
    signers: Path | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None  # the file read, or None (defaults only)
    root: Path  # the config file's folder, else the folder the search started from
    store: str
    audit: tuple[SinkConfig, ...]
    notify: tuple[dict[str, Any], ...] = field(repr=False)  # channel URLs carry tokens
    templates: dict[str, Any]
    lock: str
    lock_timeout: float
    lease: float
    keep_lock_when_paused: bool
    router: str
    default_env: str
    plugins: tuple[str, ...]
    envs: dict[str, EnvConfig]
    extra: dict[str, Any] = field(default_factory=dict)  # plugin keys (runbook_config_keys)
    # How long a paused run keeps its run lock (seconds): `runbook cancel` releases it sooner.
    paused_lease: float = PAUSED_LEASE
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # [tool.runbook.groups]
    inventory: str | None = None  # inventory file, absolute (docs/fleets.md)
    audit_key: str | None = None  # Ed25519 private key signing audit checkpoints (its path)
    metrics: str | None = None  # pushgateway+http://... or textfile://DIR (docs/metrics.md)
    executor: str = "local://"  # where step attempts run (runbook_executors)
    durability: str = "power"  # "power" or "process" (DURABILITY; docs/durable-runs.md)

    def env(self, name: str | None = None) -> EnvConfig:
        """An env by name (None: ``default_env``); one without a section is ``standard``."""
        name = self.default_env if name is None else name
        if name in self.envs:
            return self.envs[name]
        return EnvConfig(name, Protection.for_level("standard"), {}, ())
