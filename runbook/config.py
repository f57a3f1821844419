"""Project configuration: ``runbook.toml``, or ``[tool.runbook]`` in ``pyproject.toml``.

Strict on purpose. A typo in a safety setting (``protecton = "strict"``) that fell back to the
default would leave prod less protected than its owners believe, so an unknown key or a value of
the wrong type is a ``ConfigError`` naming the file, the dotted key and, when one is close, the key
that was probably meant. Values are never echoed in type errors: a webhook URL is a secret.

Paths inside ``sqlite://``, ``jsonl://`` and ``file://`` URLs are relative to the project root (the
folder of the config file), not to the cwd, so ``runbook exec`` and ``runbook approve`` started
from different folders of one project share one store. See docs/configuration.md.
"""

from __future__ import annotations

import difflib
import getpass
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from runbook.errors import ConfigError
from runbook.protection import LEVELS, Protection

CONFIG_FILE = "runbook.toml"
PYPROJECT = "pyproject.toml"
DEFAULT_ENV = "dev"
PAUSED_LEASE = 7 * 24 * 3600.0  # seconds a paused run keeps its run lock (7 days)
GIT_TIMEOUT = 2.0  # seconds; the actor lookup must never hang a run

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


# -- discovery -------------------------------------------------------------------------------------


def load_config(
    start: Path,
    *,
    explicit: Path | None = None,
    environ: Mapping[str, str] | None = None,
    extra_keys: Iterable[str] = (),
) -> Config:
    """Read the configuration that applies to ``start`` (a runbook's folder, or the cwd).

    ``explicit`` (``--config``) skips the search. Otherwise the nearest folder upwards with a
    ``runbook.toml``, or a ``pyproject.toml`` that has ``[tool.runbook]``, wins; ``runbook.toml``
    first within one folder. No file at all gives the defaults, rooted at the project root: the
    nearest folder upwards with a ``pyproject.toml``, ``runbook.toml`` or ``.git`` (else
    ``start``), so ``runbook exec runbooks/x.py`` and ``runbook runs`` from the project's top
    folder find the same store.
    """
    environ = os.environ if environ is None else environ
    start = Path(start).expanduser().absolute()
    if start.is_file():
        start = start.parent
    path: Path | None
    if explicit is not None:
        path = Path(explicit).expanduser().absolute()
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file not found")
        selected = _select(path, _parse(path, _read(path)))
        if selected is None:
            raise ConfigError(f"{path}: has no [tool.runbook] table")
        table, prefix = selected
    else:
        found = _discover(start)
        path, table, prefix = found if found else (None, {}, "")
    root = path.parent if path else _project_root(start)
    return _Builder(path, prefix, root).build(table, environ, frozenset(extra_keys))


def listed_plugins(start: Path, *, explicit: Path | None = None) -> list[str]:
    """The ``plugins = [...]`` of the configuration that applies, read without validating.

    Plugins named there may declare config keys of their own (``runbook_config_keys``), so they
    must be imported before the configuration can be validated.
    """
    start = Path(start).expanduser().absolute()
    if start.is_file():
        start = start.parent
    if explicit is not None:
        path = Path(explicit).expanduser().absolute()
        selected = _select(path, _parse(path, _read(path))) if path.is_file() else None
        table = selected[0] if selected else {}
    else:
        found = _discover(start)
        table = found[1] if found else {}
    listed = table.get("plugins", [])
    return [p for p in listed if isinstance(p, str)] if isinstance(listed, list) else []


def _project_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ("pyproject.toml", "runbook.toml", ".git")):
            return folder
    return start


def _discover(start: Path) -> tuple[Path, dict[str, Any], str] | None:
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            selected = _select(candidate, _parse(candidate, _read(candidate)))
            assert selected is not None  # a runbook.toml always selects something
            return candidate, *selected
        candidate = folder / PYPROJECT
        if candidate.is_file():
            text = _read(candidate)
            if "runbook" not in text:  # not ours; don't fail on some other tool's broken file
                continue
            selected = _select(candidate, _parse(candidate, text))
            if selected is not None:
                return candidate, *selected
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        where = f"{path}:{match.group(1)}" if match else str(path)
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None


def _select(path: Path, data: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The runbook table of a parsed file and its dotted prefix; None: a pyproject without one."""
    tool = data.get("tool")
    if path.name == PYPROJECT:
        if not isinstance(tool, dict) or "runbook" not in tool:
            return None
    elif "tool" not in data:
        return data, ""  # runbook.toml with top-level keys
    else:
        others = sorted(set(data) - {"tool"})
        if others:
            raise ConfigError(
                f"{path}: {others[0]}: use either top-level keys or a "
                "[tool.runbook] table in runbook.toml, not both"
            )
        if not isinstance(tool, dict) or set(tool) != {"runbook"}:
            extra = sorted(set(tool) - {"runbook"}) if isinstance(tool, dict) else []
            key = f"tool.{_key(extra[0])}" if extra else "tool"
            raise ConfigError(f"{path}: unknown key {key}: runbook.toml only holds [tool.runbook]")
    table = tool["runbook"]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tool.runbook: expected a table, got {_kind(table)}")
    return table, "tool.runbook"


# -- validation --------------------------------------------------------------------------------


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
_KINDS |= {list: "an array", dict: "a table"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), f"a {type(value).__name__}")


class _Builder:
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
                    f"{self.path}: unknown key {self.dotted(*where, _key(name))}"
                    f"{hint}; known keys: {', '.join(sorted(allowed))}"
                )

    def expect(self, value: Any, types: type | tuple[type, ...], key: str, what: str) -> Any:
        types = types if isinstance(types, tuple) else (types,)
        # bool is an int in Python, but ``lease = true`` is a mistake, not one second.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise self.error(key, f"expected {what}, got {_kind(value)}")
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
            store = _env_store(environ["RUNBOOK_STORE"])
        default_env = self.expect(
            table.get("default_env", DEFAULT_ENV), str, key("default_env"), "a string"
        )
        groups = self.groups(table.get("groups", {}))
        envs = self.envs(table.get("env", {}))
        for env_cfg in envs.values():
            for i, name in enumerate(env_cfg.approvers):
                if name.startswith("group:") and name[len("group:") :] not in groups:
                    raise self.error(
                        key("env", _key(env_cfg.name), f"approvers[{i}]"),
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
            raise self.error(
                key,
                "at least one audit sink is required: the audit trail is a "
                "safety property (use logging://runbook to just log events)",
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
            name: self.strings(members, self.dotted("groups", _key(name)))
            for name, members in value.items()
        }

    def envs(self, value: Any) -> dict[str, EnvConfig]:
        self.expect(value, dict, self.dotted("env"), "a table of [env.NAME] tables")
        envs = {}
        for name, section in value.items():
            where = ("env", _key(name))
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


# -- URLs -----------------------------------------------------------------------------------------


def resolve_url(url: str, root: Path) -> str:
    """Anchor the relative path of a ``sqlite:///``, ``jsonl://``, ``file://`` or ``textfile://``
    URL at ``root``.

    ``sqlite:///rel.db`` has its path after the third slash (``sqlite:////abs.db`` is absolute);
    ``jsonl://rel`` and ``file://rel`` after the second. An empty path (``sqlite://``: "in the
    run store") and every other scheme are returned unchanged.
    """
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "sqlite":
        if not rest.startswith("/"):
            return url  # no path, or a host: the provider reports it
        lead, rest = "/", rest[1:]
    elif scheme.lower() in ("jsonl", "file", "textfile"):
        lead = ""
    else:
        return url
    path, sep, query = rest.partition("?")
    if not path or path.startswith("/"):
        return url
    anchored = Path(path).expanduser() if path.startswith("~") else root / path
    return f"{scheme}://{lead}{os.path.normpath(anchored)}{sep}{query}"


def _env_store(url: str) -> str:
    """``RUNBOOK_STORE`` is typed in a shell, so its relative paths are relative to the cwd."""
    if "://" not in url:
        raise ConfigError(
            "RUNBOOK_STORE (environment): expected a URL such as sqlite:///path/runbook.db"
        )
    return resolve_url(url, Path.cwd())


# -- actor ----------------------------------------------------------------------------------------


def resolve_actor(
    explicit: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Who is running this: ``--as``, else ``RUNBOOK_ACTOR``, else git ``user.email``, else the OS
    user. The audit trail records it; four-eyes approvals compare it."""
    if explicit and explicit.strip():
        return explicit.strip()
    environ = os.environ if environ is None else environ
    actor = environ.get("RUNBOOK_ACTOR", "").strip()
    if actor:
        return actor
    email = _git_email(cwd)
    if email:
        return email
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers) and no LOGNAME/USER
        return f"uid-{os.getuid()}"


def _git_email(cwd: Path | None) -> str | None:
    try:
        done = subprocess.run(
            ["git", "config", "user.email"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    email = done.stdout.strip()
    return email if done.returncode == 0 and email else None
