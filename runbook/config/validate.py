"""Validating a configuration table into a ``Config``: strict, and every error says where.

An unknown key or a value of the wrong type is a ``ConfigError`` naming the file, the dotted key
and, when one is close, the key that was probably meant (``protecton`` -> ``protection``). Values
are never echoed in type errors: a webhook URL is a secret. Relative paths, in URLs and in
``inventory``, ``audit_key`` and ``signers``, are anchored at the project root
(``runbook.config.urls``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runbook.config.model import (
    DEFAULT_AUDIT,
    DEFAULT_ENV,
    DURABILITY,
    ENV_KEYS,
    PAUSED_LEASE,
    PROTECTION_FLAGS,
    SINK_KEYS,
    TOP_KEYS,
    Config,
    EnvConfig,
    SinkConfig,
)
from runbook.config.urls import env_store, resolve_url
from runbook.errors import ConfigError
from runbook.protection import LEVELS, Protection


def quoted_key(name: str) -> str:
    """A key as a message shows it in a dotted path: bare, else JSON-quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_KINDS |= {list: "an array", dict: "a table"}


def kind_of(value: Any) -> str:
    """What a value is, in TOML's words, for a type error (never the value: it may be secret)."""
    return _KINDS.get(type(value), f"a {type(value).__name__}")


class Builder:
    """Validates one file's table into a ``Config``; every error names the file and dotted key."""

    def __init__(self, path: Path | None, prefix: str, root: Path) -> None:
        self.path = path
        self.prefix = prefix
        self.root = root

    def dotted(self, *parts: str) -> str:
        return ".".join([p for p in (self.prefix, *parts) if p])

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path or 'configuration'}: {key}: {problem}")

    def check_keys(self, table: dict[str, Any], allowed: Iterable[str], *where: str) -> None:
        allowed = list(allowed)
        for name in table:
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{self.path}: unknown key {self.dotted(*where, quoted_key(name))}"
                    f"{hint}; known keys: {', '.join(sorted(allowed))}"
                )

    def expect(self, value: Any, types: type | tuple[type, ...], key: str, what: str) -> Any:
        types = types if isinstance(types, tuple) else (types,)
        # bool is an int in Python, but ``lease = true`` is a mistake, not one second.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise self.error(key, f"expected {what}, got {kind_of(value)}")
        return value

    def flag(self, value: Any, key: str) -> bool:
        return bool(self.expect(value, bool, key, "a boolean (true or false)"))

    def url(self, value: Any, key: str) -> str:
        self.expect(value, str, key, "a URL string")
        if "://" not in value:
            raise self.error(key, "expected a URL such as scheme://..., got a string without ://")
        return resolve_url(value, self.root)

    def path_of(self, value: Any, key: str) -> str | None:
        """A file path relative to the project root (None or "": not set)."""
        if value is None:
            return None
        self.expect(value, str, key, "a file path")
        if not value.strip():
            return None
        path = Path(value).expanduser()
        return os.path.normpath(path if path.is_absolute() else self.root / path)

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        self.expect(value, list, key, "an array of strings")
        for i, item in enumerate(value):
            self.expect(item, str, f"{key}[{i}]", "a string")
        return tuple(value)

    def number(self, value: Any, key: str, *, positive: bool) -> float:
        self.expect(value, (int, float), key, "a number of seconds")
        if value != value or value < 0 or (positive and value == 0):  # NaN, negative
            raise self.error(key, "must be greater than 0" if positive else "must be 0 or more")
        return float(value)

    def build(
        self, table: dict[str, Any], environ: Mapping[str, str], extra_keys: frozenset[str]
    ) -> Config:
        self.check_keys(table, [*TOP_KEYS, *sorted(extra_keys - set(TOP_KEYS))])
        root = self.root
        key = self.dotted
        store = self.url(table.get("store", f"sqlite:///{root}/.runbook/runbook.db"), key("store"))
        if environ.get("RUNBOOK_STORE"):
            store = env_store(environ["RUNBOOK_STORE"])
        default_env = self.expect(
            table.get("default_env", DEFAULT_ENV), str, key("default_env"), "a string"
        )
        groups = self.groups(table.get("groups", {}))
        envs = self.envs(table.get("env", {}))
        for env_cfg in envs.values():
            for i, name in enumerate(env_cfg.approvers):
                if name.startswith("group:") and name[len("group:") :] not in groups:
                    raise self.error(
                        key("env", quoted_key(env_cfg.name), f"approvers[{i}]"),
                        f"unknown group {name[len('group:') :]!r}; [groups] defines: "
                        f"{', '.join(sorted(groups)) or 'none'}",
                    )
        return Config(
            path=self.path,
            root=root,
            store=store,
            audit=self.audit(table.get("audit", [f"jsonl://{root}/.runbook/audit.jsonl"])),
            notify=self.notify(table.get("notify", [])),
            templates=self.templates(table.get("templates", {})),
            lock=self.url(table.get("lock", f"file://{root}/.runbook/locks"), key("lock")),
            lock_timeout=self.number(
                table.get("lock_timeout", 0), key("lock_timeout"), positive=False
            ),
            lease=self.number(table.get("lease", 30), key("lease"), positive=True),
            keep_lock_when_paused=self.flag(
                table.get("keep_lock_when_paused", True), key("keep_lock_when_paused")
            ),
            paused_lease=self.number(
                table.get("paused_lease", PAUSED_LEASE), key("paused_lease"), positive=True
            ),
            router=self.url(
                table.get("router", f"file://{root}/.runbook/router.json"), key("router")
            ),
            default_env=default_env,
            plugins=self.strings(table.get("plugins", []), key("plugins")),
            envs=envs,
            groups=groups,
            inventory=self.path_of(table.get("inventory"), key("inventory")),
            metrics=self.url(table["metrics"], key("metrics")) if table.get("metrics") else None,
            extra={k: v for k, v in table.items() if k in extra_keys and k not in TOP_KEYS},
            audit_key=self.key_path(table.get("audit_key")),
            executor=self.url(table.get("executor", "local://"), key("executor")),
            durability=self.choice(table.get("durability", "power"), key("durability"), DURABILITY),
        )

    def choice(self, value: Any, key: str, allowed: tuple[str, ...]) -> str:
        """One of ``allowed`` (a string), else an error listing them."""
        shown = " or ".join(repr(a) for a in allowed)
        self.expect(value, str, key, shown)
        if value not in allowed:
            raise self.error(key, f"expected {shown}, got {value!r}")
        return str(value)

    def key_path(self, value: Any) -> str | None:
        """``audit_key``: a path, relative to the project root; the key is read when a run
        starts (runbook.audit.signing), so a config without signing never needs the package."""
        if value is None:
            return None
        self.expect(value, str, self.dotted("audit_key"), "a path to an Ed25519 private key")
        if not value.strip():
            raise self.error(self.dotted("audit_key"), "must not be empty")
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else self.root / path)

    def audit(self, value: Any) -> tuple[SinkConfig, ...]:
        key = self.dotted("audit")
        self.expect(value, list, key, "an array of sink URLs")
        if not value:
            # A value that works as it is: a logging:// sink refuses every event until the
            # program configures a handler for its logger, which the runbook CLI does not.
            raise self.error(
                key,
                "at least one audit sink is required: the audit trail is a safety property "
                f'(the default is audit = ["{DEFAULT_AUDIT}"]: write that, or remove the key)',
            )
        sinks = []
        for i, entry in enumerate(value):
            where = f"audit[{i}]"
            if isinstance(entry, str):
                sinks.append(SinkConfig(self.url(entry, self.dotted(where))))
                continue
            self.expect(entry, dict, self.dotted(where), 'a URL or a table {url = "..."}')
            self.check_keys(entry, SINK_KEYS, where)
            if "url" not in entry:
                raise self.error(self.dotted(where), "missing required key url")
            best_effort = self.flag(
                entry.get("best_effort", False), self.dotted(where, "best_effort")
            )
            sinks.append(SinkConfig(self.url(entry["url"], self.dotted(where, "url")), best_effort))
        return tuple(sinks)

    def notify(self, value: Any) -> tuple[dict[str, Any], ...]:
        # The notifier owns the rule semantics (aliases, severities, options); we add the file,
        # the dotted key and the "did you mean".
        from runbook.notify.rules import RULE_KEYS, Rules

        self.expect(value, list, self.dotted("notify"), "an array of tables")
        for i, rule in enumerate(value):
            self.expect(rule, dict, self.dotted(f"notify[{i}]"), 'a table {to = "..."}')
            self.check_keys(rule, sorted(RULE_KEYS), f"notify[{i}]")
        try:
            Rules.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {self.dotted(str(exc))}") from None
        return tuple(dict(rule) for rule in value)

    def templates(self, value: Any) -> dict[str, Any]:
        from runbook.audit.events import KINDS
        from runbook.notify.templates import ADHOC, ALIASES, Templates

        self.expect(value, dict, self.dotted("templates"), "a table of templates by event kind")
        self.check_keys(value, [*KINDS, *ALIASES, ADHOC], "templates")
        try:
            Templates.load(value)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {self.dotted('templates')}: {exc}") from None
        return dict(value)

    def groups(self, value: Any) -> dict[str, tuple[str, ...]]:
        self.expect(value, dict, self.dotted("groups"), "a table of NAME = [members]")
        return {
            name: self.strings(members, self.dotted("groups", quoted_key(name)))
            for name, members in value.items()
        }

    def envs(self, value: Any) -> dict[str, EnvConfig]:
        self.expect(value, dict, self.dotted("env"), "a table of [env.NAME] tables")
        envs = {}
        for name, section in value.items():
            where = ("env", quoted_key(name))
            at = lambda k, where=where: self.dotted(*where, k)  # noqa: E731
            self.expect(section, dict, self.dotted(*where), "a table")
            self.check_keys(section, ENV_KEYS, *where)
            level = section.get("protection", "standard")
            self.expect(level, str, at("protection"), f"one of {', '.join(LEVELS)}")
            if level not in LEVELS:
                close = difflib.get_close_matches(level, LEVELS, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(
                    at("protection"), f"must be one of {', '.join(LEVELS)}, got {level!r}{hint}"
                )
            flags = {f: self.flag(section[f], at(f)) for f in PROTECTION_FLAGS if f in section}
            params = self.expect(section.get("params", {}), dict, at("params"), "a table")
            approvers = self.strings(section.get("approvers", []), at("approvers"))
            protection = Protection.for_level(level, **flags)
            signers = None
            if "signers" in section:
                raw = self.expect(section["signers"], str, at("signers"), "a file path")
                signers = (self.root / Path(raw).expanduser()).absolute()
            envs[name] = EnvConfig(name, protection, dict(params), approvers, signers)
        return envs
