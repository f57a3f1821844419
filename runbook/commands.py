"""Building commands and URLs from run values without letting a value become code.

The one place that knows how a value reaches a shell or a URL, shared by every resource that runs
commands (``shell``, the fleet's ``ssh``) or builds URLs (``http``):

* ``build(["deployctl", "install", svc])``: an argv list, run with no shell at all.
* ``build("deployctl install {svc}", {"svc": svc})``: a template for ``/bin/sh`` whose every
  placeholder is ``shlex.quote``-d, so a value is always one word, never code.
* ``find_trap(text, tainted)`` (``TrapIndex`` for a run's many commands): the f-string trap. A
  *string* command that already contains, verbatim, a param or step output (any of them, at any
  depth) with characters outside ``[A-Za-z0-9_./:=@%+,-]`` was built by interpolation;
  ``unsafe_command`` explains it and shows the safe form.
* ``url("http://api/{svc}/deploy?v={version}", svc=..., version=...)``: each placeholder
  percent-encoded as one path segment or query value, so ``/``, ``?``, ``&`` or ``#`` in a value
  cannot change which resource is addressed.

Decisions only: nothing here runs a process or opens a socket.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from runbook.errors import CommandError, UnsafeCommand
from runbook.shellwords import refuse_unquotable

#: Characters that mean nothing to ``/bin/sh``: a value made only of these is safe verbatim.
SAFE_CHARS = "A-Za-z0-9_./:=@%+,-"
_UNSAFE = re.compile(f"[^{SAFE_CHARS}]")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"})


@dataclass(frozen=True)
class Tainted:
    """A value that came from outside the runbook's source: where from, and a placeholder name."""

    source: str  # "param 'version'", "output of step 'plan' ['target']"
    value: str
    name: str  # a placeholder name for the safe form: ``version``, ``target``


@dataclass(frozen=True)
class Command:
    """A command ready to run: ``argv`` (no shell) or ``script`` (for ``/bin/sh -c``)."""

    argv: tuple[str, ...] | None = None
    script: str | None = None
    unsafe: bool = False  # built with ``shell.unsafe``: no trap check, recorded in the audit

    @property
    def uses_shell(self) -> bool:
        return self.script is not None

    @property
    def text(self) -> str:
        """The command as one line for messages (argv joined with quoting)."""
        return self.script if self.script is not None else shlex.join(self.argv or ())

    def args(self) -> list[str]:
        """What to hand to ``exec``: the argv, or ``/bin/sh -c SCRIPT``."""
        if self.script is not None:
            return ["/bin/sh", "-c", self.script]
        return list(self.argv or ())


# -- building ------------------------------------------------------------------------------------


def build(
    command: str | Sequence[Any],
    values: Mapping[str, Any] | None = None,
    *,
    unsafe: bool = False,
) -> Command:
    """A ``Command`` from an argv list, or from a string and its quoted placeholder values.

    A string with no ``values`` runs as written (pipes and redirections of a constant command
    are fine); the trap check (``find_trap``) is the caller's, because only it knows the run.
    """
    values = dict(values or {})
    if isinstance(command, str):
        if not command.strip():
            raise CommandError("empty command")
        if unsafe and values:
            raise CommandError("shell.unsafe() runs its string as written: it takes no values")
        script = render(command, values, shlex.quote) if values else command
        if values:
            refuse_unquotable(command)
        return Command(script=script, unsafe=unsafe)
    if isinstance(command, bytes) or not isinstance(command, Sequence):
        raise CommandError(
            f"a command is an argv list or a string template, got {type(command).__name__}"
        )
    if values:
        raise CommandError(
            "an argv list takes no placeholder values: put each value in the list itself, "
            f"e.g. [..., {next(iter(values))}]"
        )
    argv = tuple(_arg(a) for a in command)
    if not argv:
        raise CommandError("empty argv list")
    return Command(argv=argv, unsafe=unsafe)


def _arg(value: Any) -> str:
    if isinstance(value, str | PurePath | int | float) and not isinstance(value, bool):
        return str(value)
    raise CommandError(
        f"argv items must be strings, numbers or paths, got {type(value).__name__}: "
        "convert it explicitly so what runs is what you meant"
    )


def render(template: str, values: Mapping[str, Any], quote_value: Callable[[str], str]) -> str:
    """Fill ``{name}`` (and ``{a.b}``, ``{a[k]}``) placeholders, each through ``quote_value``.

    Every placeholder needs a value and every value a placeholder: a typo is an error, never an
    empty word or a silently dropped argument.
    """
    formatter = string.Formatter()
    out: list[str] = []
    used: set[str] = set()
    try:
        parsed = list(formatter.parse(template))
    except ValueError as exc:
        raise CommandError(f"bad template {template!r}: {exc}") from None
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise CommandError(f"template {template!r}: placeholders need names, like {{svc}}")
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in values:
            raise CommandError(f"template {template!r}: no value for {{{field}}}; pass {root}=...")
        used.add(root)
        try:
            value, _ = formatter.get_field(field, (), values)
            value = formatter.convert_field(value, conversion)
            text = formatter.format_field(value, spec or "")
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise CommandError(f"template {template!r}: cannot fill {{{field}}}: {exc}") from None
        out.append(quote_value(text))
    unused = sorted(set(values) - used)
    if unused:
        raise CommandError(
            f"template {template!r} has no placeholder for {', '.join(unused)}: "
            f"add {{{unused[0]}}} or drop the value"
        )
    return "".join(out)


def output_text(data: bytes) -> str:
    """A command's output as text, the same over ``shell`` and ``ssh``: UTF-8 (not the locale's
    encoding), with each byte that is not UTF-8 kept visible as its escape (``caf\\xe9``), so a
    Latin-1 log or a binary byte neither fails the step nor is lost."""
    return data.decode("utf-8", "backslashreplace")


def input_bytes(text: str | None) -> bytes | None:
    """What ``input=`` sends a command: UTF-8, and text ``os.fsdecode`` made of bytes that are
    not UTF-8 sent as those bytes again."""
    return None if text is None else text.encode("utf-8", "surrogateescape")


def placeholders(template: str) -> list[str]:
    """The root names of a template's placeholders (``{plan[target]}`` -> ``plan``)."""
    try:
        return [
            re.split(r"[.\[]", field, maxsplit=1)[0]
            for _, field, _, _ in string.Formatter().parse(template)
            if field
        ]
    except ValueError:
        return []


# -- the f-string trap ---------------------------------------------------------------------------


def tainted_values(params: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[Tainted]:
    """Every param value and step output string of the run that a shell would read as code.

    All of them, at any depth, and the keys of mappings too: there is no cap past which a value
    goes unchecked (``TrapIndex`` makes checking many of them cheap).
    """
    found = [t for name, value in params.items() for t in param_values(name, value)]
    found += [t for step, output in outputs.items() for t in output_values(step, output)]
    return found


def param_values(name: str, value: Any) -> list[Tainted]:
    """The tainted strings of one param: its text, and each item's of a list or dict."""
    return [
        Tainted(f"param {name!r}{path}", text, _ident(name)) for path, text, _ in _strings(value)
    ]


def output_values(step: str, output: Any) -> list[Tainted]:
    """The tainted strings of one step's output, each named by where it sits in it."""
    return [
        Tainted(f"output of step {step!r}{path}", text, _ident(last if last is not None else step))
        for path, text, last in _strings(output)
    ]


def _strings(value: Any) -> Iterator[tuple[str, str, str | None]]:
    """``(path, text, last key)`` of every string in ``value`` a shell would read as code.

    Iterative (no recursion limit, no depth cap); a container met twice is walked once. Keys of
    mappings count (``{hostile: 1}``); a leaf that is not a string (a ``Path``, a param type's
    object) counts as its ``str()``, the text an f-string writes of it. Paths are built per
    container, and a leaf's only when it is tainted: most leaves of a large output cost one test.
    """
    stack: list[tuple[Any, str, str | None]] = [(value, "", None)]
    seen: set[int] = set()
    while stack:
        item, path, last = stack.pop()
        if not _is_container(item):
            if _is_tainted(text := _text(item)):
                yield path, text, last
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        keyed = isinstance(item, Mapping)
        nested: list[tuple[Any, str, str | None]] = []
        for key, child in item.items() if keyed else enumerate(item):
            if keyed and _is_tainted(text := _text(key)):
                yield f"{path} key {key!r}", text, "key"
            kind = type(child)
            if kind in _SCALARS:
                continue
            where = f"{path}[{key!r}]" if keyed else f"{path}[{key}]"
            if kind is str:
                if _is_tainted(child):
                    yield where, child, str(key)
            else:
                nested.append((child, where, str(key)))
        stack.extend(reversed(nested))


_SCALARS = frozenset({type(None), bool, int, float})  # their text is made of safe characters


def _is_container(item: Any) -> bool:
    kind = type(item)
    if kind is str or kind in _SCALARS:
        return False
    return isinstance(item, dict | list | tuple | Mapping | set | frozenset)


def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if type(item) in _SCALARS:
        return ""
    try:
        return str(item)
    except Exception:  # an f-string could not write it either
        return ""


def _is_tainted(text: str) -> bool:
    return len(text.strip()) >= 2 and _UNSAFE.search(text) is not None


def _ident(text: str) -> str:
    name = re.sub(r"\W+", "_", str(text)).strip("_").lower() or "value"
    return name if not name[0].isdigit() else f"v_{name}"


def command_scripts(command: Command) -> list[str]:
    """The parts of a command a shell will parse: the script, ``sh -c SCRIPT`` in an argv, and
    the remote command of an ``ssh`` argv (the remote shell parses it)."""
    if command.script is not None:
        return [command.script]
    argv = command.argv or ()
    program = PurePath(argv[0]).name if argv else ""
    if program in _SHELLS and "-c" in argv[1:]:
        index = argv.index("-c", 1)
        return list(argv[index + 1 : index + 2])
    if program == "ssh":
        # ssh joins its remote arguments with spaces and the remote shell parses the result.
        return [" ".join(argv[1:])]
    return []


def find_trap(text: str, tainted: Iterable[Tainted]) -> Tainted | None:
    """The longest run value with shell metacharacters that appears verbatim in ``text``."""
    return TrapIndex(tainted).find(text)


class TrapIndex:
    """A run's tainted values, grouped by length, so one command is checked against all of
    them in time that grows with the command, not with the values' count times its length.

    For each length, whichever is cheaper: look each value up in the command (``str.find`` in
    C), or slice the command into every window of that length and intersect that set with the
    values'. Either way every value is checked: there is no cap. ``add`` is incremental, so a run
    indexes each param and each step's output once (``runbook.guard``).
    """

    def __init__(self, tainted: Iterable[Tainted] = ()) -> None:
        self._groups: dict[int, dict[str, tuple[int, Tainted]]] = {}
        self._lengths: list[int] = []  # longest first: the first group with a hit names it
        self.count = 0
        self.add(tainted)

    def add(self, tainted: Iterable[Tainted]) -> None:
        for t in tainted:
            group = self._groups.get(len(t.value))
            if group is None:
                group = self._groups[len(t.value)] = {}
                self._lengths = sorted(self._groups, reverse=True)
            if t.value not in group:  # the first source of a value names it
                group[t.value] = (self.count, t)
                self.count += 1

    def find(self, text: str) -> Tainted | None:
        """The longest value found verbatim in ``text`` (of equal ones, the first added)."""
        size = len(text)
        for length in self._lengths:
            if length > size:
                continue
            group = self._groups[length]
            windows = size - length + 1
            if len(group) * (200 + size) <= windows * (500 + 2 * length):
                hit = next(filter(text.__contains__, group), None)
                if hit is not None:
                    return group[hit][1]
            else:
                cuts = map(slice, range(windows), range(length, size + 1))
                hits = group.keys() & set(map(text.__getitem__, cuts))
                if hits:
                    return min((group[h] for h in hits), key=lambda entry: entry[0])[1]
        return None


def unsafe_command(
    text: str,
    hit: Tainted,
    *,
    call: str = "shell",
    prefix: str = "",
    redact: Callable[[str], str] | None = None,
) -> UnsafeCommand:
    """The refusal: where the value came from, why it is dangerous, and the safe form.

    ``call`` and ``prefix`` shape the suggestion (``ssh(host, ...)`` passes ``call="ssh"`` and
    ``prefix="host, "``). The hostile value itself is replaced by its placeholder in what is shown.
    """
    mask = redact or (lambda t: t)
    template = text.replace(hit.value, "{" + hit.name + "}")
    bad = "".join(sorted(set(_UNSAFE.findall(hit.value))))
    try:
        words = shlex.split(template)
    except ValueError:
        words = []
    forms = [f"{call}({prefix}{_py(template)}, {hit.name}=...)   # each value quoted"]
    if words and all(_UNSAFE.search(w) is None or w == "{" + hit.name + "}" for w in words):
        argv = ", ".join(hit.name if w == "{" + hit.name + "}" else _py(w) for w in words)
        forms.insert(0, f"{call}({prefix}[{argv}])   # no shell at all")
    safe_form = "\n    or: ".join(forms)
    message = (
        f"refusing to run a {call} command string containing the value of {hit.source} "
        f"verbatim: it has shell metacharacters ({bad!r}) and /bin/sh would run them as code.\n"
        f"  command: {mask(template)}\n"
        f"  safe form: {mask(safe_form)}\n"
        f"  (an f-string builds this trap; {call}.unsafe(...) runs a string as written and is "
        "recorded in the audit)"
    )
    return UnsafeCommand(message, source=hit.source, safe_form=mask(safe_form))


def _py(text: str) -> str:
    """A Python string literal, double-quoted like the docs write them."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# -- URLs ----------------------------------------------------------------------------------------


def quote_component(value: Any) -> str:
    """Percent-encode a value as one URL path segment or query value (``/?&#=`` included)."""
    return quote(str(value), safe="")


def url(template: str, /, **values: Any) -> str:
    """Fill a URL template, each placeholder percent-encoded as one component.

    ``url("http://web/api/{svc}/deploy?version={v}", svc="web 1", v="1.0&x=1")`` gives
    ``http://web/api/web%201/deploy?version=1.0%26x%3D1``: a value can never add a path segment,
    a query parameter or a fragment.
    """
    return render(template, values, quote_component)
