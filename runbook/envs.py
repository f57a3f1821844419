"""The rules of an env: the one a Runner was built for, and the one a stored run was started in.

A run resumed, approved or denied from another process keeps the rules of *its* env: a prod run
must not finish under dev protection because the resuming shell said nothing. ``Envs`` answers
"what does env X demand" for the runner and for every service acting for it (durable runs,
decisions, the Temporal workers), from the runner's own settings or its configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.protection import Protection


@dataclass(frozen=True)
class EnvRules:
    """What a stored run's env demands of decisions (its own env, not the shell's)."""

    name: str
    protection: Protection
    approvers: tuple[str, ...]
    signers: Path | None
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Envs:
    """A Runner's env and its rules, and the configuration that holds the other envs' rules."""

    name: str
    protection: Protection
    approvers: tuple[str, ...] = ()
    signers: Path | None = None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    config: Any = None

    def settings(self, env: str) -> tuple[Protection, tuple[str, ...]]:
        """Protection and approvers of ``env`` (a stored run's env, maybe not the runner's).

        With no configuration to consult the answer is never weaker than the standard level.
        """
        if env == self.name:
            return self.protection, self.approvers
        if self.config is not None:
            env_cfg = self.config.env(env)
            return env_cfg.protection, tuple(env_cfg.approvers)
        if self.protection.level == "none":
            return Protection.for_level("standard"), self.approvers
        return self.protection, self.approvers

    def rules(self, env: str) -> EnvRules:
        """Everything ``env`` demands of a decision: protection, approvers, signers, groups."""
        protection, approvers = self.settings(env)
        signers = self.signers
        if env != self.name and self.config is not None:
            signers = self.config.env(env).signers
        return EnvRules(env, protection, approvers, signers, dict(self.groups))
