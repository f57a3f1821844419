"""``[tool.runbook]`` keys of the ssh resource, validated once, before anything runs.

A typo'd or mistyped key is a ``ConfigError`` naming it: ``ssh_accept_new = "yes"`` must not
silently keep (or drop) host key checking.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.errors import ConfigError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
KEYS = (
    "ssh_known_hosts",
    "ssh_accept_new",
    "ssh_identity_file",
    "ssh_user",
    "ssh_connect_timeout",
    "ssh_timeout",
    "ssh_max_sessions",
)


@dataclass(frozen=True)
class Settings:
    known_hosts: Path = field(default_factory=lambda: Path(DEFAULT_KNOWN_HOSTS).expanduser())
    accept_new: bool = False  # trust an unknown host key on first use and remember it
    identity_file: Path | None = None  # None: keys from ssh-agent (and ~/.ssh/id_*)
    user: str | None = None  # None: the host's ansible_user, else the local user
    connect_timeout: float = 10.0  # TCP connect + handshake + auth; past it: unreached
    timeout: float = 600.0  # per command when neither timeout= nor a step timeout applies
    max_sessions: int = 8  # concurrent commands per connection (sshd's MaxSessions is 10)

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        extra = dict(getattr(config, "extra", None) or {})
        root = Path(getattr(config, "root", None) or Path.cwd())
        where = str(getattr(config, "path", None) or "configuration")

        def error(key: str, problem: str) -> ConfigError:
            return ConfigError(f"{where}: {key}: {problem}")

        def path(key: str, default: str | None) -> Path | None:
            value = extra.get(key, default)
            if value is None:
                return None
            if not isinstance(value, str) or not value.strip():
                raise error(key, "expected a file path")
            found = Path(value).expanduser()
            return found if found.is_absolute() else root / found

        def number(key: str, default: float, kind: type = float) -> Any:
            value = extra.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise error(key, "expected a number")
            if value <= 0 or (kind is int and value != int(value)):
                raise error(key, f"must be a {'whole ' if kind is int else ''}number above 0")
            return kind(value)

        accept = extra.get("ssh_accept_new", False)
        if not isinstance(accept, bool):
            raise error("ssh_accept_new", "expected a boolean (true or false)")
        user = extra.get("ssh_user")
        if user is not None and (not isinstance(user, str) or not user.strip()):
            raise error("ssh_user", "expected a user name")
        known = path("ssh_known_hosts", DEFAULT_KNOWN_HOSTS)
        assert known is not None
        return cls(
            known_hosts=known,
            accept_new=accept,
            identity_file=path("ssh_identity_file", None),
            user=user,
            connect_timeout=number("ssh_connect_timeout", 10.0),
            timeout=number("ssh_timeout", 600.0),
            max_sessions=number("ssh_max_sessions", 8, int),
        )

    def user_for(self, host: Any) -> str:
        import getpass

        return (
            getattr(host, "user", None)
            or self.user
            or os.environ.get("USER")
            or (getpass.getuser())
        )

    def identity_for(self, host: Any) -> Path | None:
        """A host's ``ansible_ssh_private_key_file`` wins over ``ssh_identity_file``."""
        own = (getattr(host, "vars", None) or {}).get("ansible_ssh_private_key_file")
        return Path(str(own)).expanduser() if own else self.identity_file
