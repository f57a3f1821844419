"""Typed parameters: declared with ``param()``, converted and validated before any step runs."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from runbook.errors import DefinitionError, ParamError
from runbook.redact import MIN_SECRET, Redactor, secret_values
from runbook.values import is_word, json_problem


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def _to_list(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return list(value)
    return [item.strip() for item in str(value).split(",") if item.strip()]


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {bool: _to_bool, list: _to_list}

# Types whose own ValueError text says nothing a user can act on ("invalid literal for int() with
# base 10"); every other callable's message is the runbook author's and is kept.
_BUILTIN_TYPES = frozenset({str, int, float, bool, list, complex})


@dataclass(frozen=True)
class ParamSpec:
    """A declared parameter. ``secret`` values are shown as ``***`` wherever they could leak."""

    name: str
    type: Callable[[Any], Any] = str
    default: Any = REQUIRED
    help: str = ""
    choices: Container[Any] | None = None
    secret: bool = False
    env: str | None = None
    example: Any = REQUIRED  # the value ``pytest --runbooks`` uses for a required parameter

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type_name(self) -> str:
        return getattr(self.type, "__name__", repr(self.type))

    def convert(self, raw: Any) -> Any:
        """Convert one raw value (a ``-p`` string or a Python value); raise ``ValueError``."""
        typ = self.type
        if isinstance(typ, type) and isinstance(raw, typ) and typ is not bool:
            value = raw
        else:
            converter = _CONVERTERS.get(typ, typ)
            try:
                value = converter(raw)
            except (TypeError, ValueError) as exc:
                shown = "***" if self.secret else repr(raw)
                own = str(exc).strip() if typ not in _BUILTIN_TYPES else ""
                if own and self.secret and str(raw):
                    own = Redactor([raw]).text(own)  # every form: a type may quote or encode it
                why = f": {own}" if own else ""
                raise ValueError(f"expected {self.type_name}, got {shown}{why}") from exc
        if self.choices is not None and value not in self.choices:
            shown = "***" if self.secret else repr(value)
            raise ValueError(f"{shown} is not one of {describe_choices(self.choices)}")
        problem = json_problem(stored_form(value))
        if problem is not None:  # a run stores and audits its params, and resumes from them
            shown = "***" if self.secret else repr(raw)
            raise ValueError(
                f"{shown} is {problem} as {self.type_name}, which is not JSON: a parameter is "
                "stored and audited with its run, so it must be a string, a path, a finite "
                "number, a bool, a list or a dict"
            )
        return value

    def describe_default(self) -> str:
        if self.required:
            return "required"
        return "***" if self.secret else repr(self.default)


def describe_choices(choices: Container[Any]) -> str:
    if isinstance(choices, range):
        return f"{choices.start}..{choices.stop - 1}" + (
            f" step {choices.step}" if choices.step != 1 else ""
        )
    try:
        return ", ".join(repr(c) for c in choices)  # type: ignore[attr-defined]
    except TypeError:
        return repr(choices)


def param(
    name: str,
    *,
    type: Callable[[Any], Any] = str,
    default: Any = REQUIRED,
    help: str = "",
    choices: Container[Any] | None = None,
    secret: bool = False,
    env: str | None = None,
    example: Any = REQUIRED,
) -> ParamSpec:
    """Declare a parameter at module level: ``version = param("version", help="...")``.

    ``env`` names an environment variable read when the value is not given with ``-p``; that is how
    secrets should arrive, so they never sit in shell history.

    A default that its own ``type`` or ``choices`` refuse is a definition error here, at import,
    naming the caller's file and line: otherwise the mistake would surface only in the one run
    that does not pass the value.
    """
    problem = _declaration_problem(name, type, choices, secret, env)
    if problem is not None:
        caller = sys._getframe(1)
        raise DefinitionError(problem, file=caller.f_code.co_filename, line=caller.f_lineno)
    if default is not REQUIRED and default is not None:
        default = _checked_default(name, type, default, choices, secret)
    return ParamSpec(
        name=name,
        type=type,
        default=default,
        help=help,
        choices=choices,
        secret=secret,
        env=env,
        example=example,
    )


def _declaration_problem(name: Any, typ: Any, choices: Any, secret: Any, env: Any) -> str | None:
    """What is wrong with a ``param(...)`` declaration, found at import: a mistake here would
    otherwise surface as a confusing error in the one run that needs the value."""
    if not is_word(name) or "=" in name:
        return f"param(name): the name must be a word that -p NAME=VALUE can give, got {name!r}"
    if name in _PARAMS_ATTRIBUTES:
        return (
            f"parameter {name!r}: params.{name} is a method of the params mapping, so a step "
            f"would get the method, not the value: name the parameter otherwise"
        )
    if not callable(typ):
        return f"parameter {name!r}: type= must be callable (int, str, a function), got {typ!r}"
    if choices is not None and (isinstance(choices, str) or not hasattr(choices, "__contains__")):
        return f"parameter {name!r}: choices= must be a list of allowed values, got {choices!r}"
    if not isinstance(secret, bool):
        return f"parameter {name!r}: secret= must be True or False, got {secret!r}"
    if env is not None and (not isinstance(env, str) or not env):
        return f"parameter {name!r}: env= must name an environment variable, got {env!r}"
    return None


def _checked_default(
    name: str,
    typ: Callable[[Any], Any],
    default: Any,
    choices: Container[Any] | None,
    secret: bool,
) -> Any:
    """The default a run will receive, or a definition error at the ``param()`` line.

    A built-in type converts its default (``type=int, default="3"`` gives ``3``, ``"x"`` is an
    error); a custom callable is not called on it (it may not be idempotent: the default is its
    output already), only ``choices`` apply. ``None`` means "not given" and is never checked.
    """
    check = typ if typ in _BUILTIN_TYPES else _same
    try:
        return ParamSpec(name=name, type=check, choices=choices, secret=secret).convert(default)
    except ValueError as exc:
        caller = sys._getframe(2)  # the runbook's ``param(...)`` line
        raise DefinitionError(
            f"parameter {name!r}: default refused: {exc}",
            file=caller.f_code.co_filename,
            line=caller.f_lineno,
        ) from None


def _same(value: Any) -> Any:
    return value


def stored_form(value: Any) -> Any:
    """A value as its run stores and audits it: a path (``type=Path``) as its text, which its
    type converts back on resume; every other value as it is (``convert`` checked it is JSON)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class Params(Mapping[str, Any]):
    """The resolved parameter values, with attribute access (``params.version``)."""

    __slots__ = ("_secret", "_values")

    def __init__(self, values: Mapping[str, Any], secret: frozenset[str] = frozenset()):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_secret", secret)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"no parameter {name!r}; declared: {sorted(self._values)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only during a run")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def secret_names(self) -> frozenset[str]:
        return self._secret

    def public(self) -> dict[str, Any]:
        """The values with secrets replaced by ``***``: what audit, store and output may see."""
        return {
            k: ("***" if k in self._secret else stored_form(v)) for k, v in self._values.items()
        }

    def __repr__(self) -> str:
        return f"Params({self.public()!r})"


# What ``params.<name>`` finds before a parameter's value: the mapping's own methods.
_PARAMS_ATTRIBUTES = frozenset(n for n in dir(Params) if not n.startswith("_"))


def resolve_params(
    specs: Mapping[str, ParamSpec],
    given: Mapping[str, Any],
    *,
    config_defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Params:
    """Resolve every declared parameter, or raise one ``ParamError`` listing every problem.

    Precedence: explicit value, then the environment variable named by ``env=``, then the selected
    environment's ``params`` from configuration, then the declared default.
    """
    environ = os.environ if environ is None else environ
    config_defaults = config_defaults or {}
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key in given:
        if key not in specs:
            known = ", ".join(sorted(specs)) or "none"
            close = difflib.get_close_matches(key, list(specs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown parameter {key!r}{hint} (declared: {known})")
    for name, spec in specs.items():
        if name in given:
            raw, source = given[name], "-p"
        elif spec.env and spec.env in environ:
            raw, source = environ[spec.env], f"${spec.env}"
        elif name in config_defaults:
            raw, source = config_defaults[name], "config"
        elif not spec.required:
            values[name] = spec.default
            continue
        else:
            hint = f" (-p {name}=...{' or $' + spec.env if spec.env else ''})"
            problems.append(f"missing required parameter {name!r}{hint}")
            continue
        if isinstance(raw, str) and not _is_utf8(raw):
            problems.append(f"parameter {name!r} from {source}: the value is not valid UTF-8")
            continue
        try:
            values[name] = spec.convert(raw)
        except ValueError as exc:
            problems.append(f"parameter {name!r} from {source}: {exc}")
            continue
        if spec.secret and any(
            len(str(v)) < MIN_SECRET for v in secret_values([values[name]]) if v is not None
        ):
            problems.append(
                f"parameter {name!r} from {source} is secret and must be at least {MIN_SECRET} "
                "characters long: a shorter value cannot be masked in output without masking "
                "everything"
            )
    if problems:
        raise ParamError(problems)
    return Params(values, frozenset(n for n, s in specs.items() if s.secret))


def _is_utf8(text: str) -> bool:
    """False for command-line or environment bytes that were not UTF-8 (surrogate-escaped)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_assignments(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Parse ``-p key=value`` strings; a pair without ``=`` is a usage error naming it.

    A key given twice is an error too: with ``-p version=1 ... -p version=2`` in a long command
    line, silently taking the last one would deploy a version nobody re-read.
    """
    out: dict[str, str] = {}
    problems = [
        f"-p expects key=value, got {p!r}"
        for p in pairs
        if "=" not in p or not p.split("=", 1)[0].strip()
    ]
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0].strip():
            continue
        key, value = pair.split("=", 1)
        key = key.strip()
        if not _is_utf8(pair):
            shown = key if _is_utf8(key) else key.encode("utf-8", "replace").decode()
            problems.append(f"-p {shown}: the value is not valid UTF-8")
            continue
        if key in out:
            problems.append(f"-p {key} is given more than once: give it once")
            continue
        out[key] = value
    if problems:
        raise ParamError(problems)
    return out
