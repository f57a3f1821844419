"""Where a placeholder sits in a ``/bin/sh`` template, and refusing it where quoting fails.

``runbook.commands.build`` quotes each placeholder's value with ``shlex.quote``, which keeps it
one word only where the shell reads words. This module reads the template as ``/bin/sh`` would
(quotes, escapes, ``$(...)``, ``${...}``, backticks, comments, here-documents) to find every
placeholder written somewhere else. Decisions only: nothing here runs a shell.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from runbook.errors import UnsafeCommand


@dataclass(frozen=True)
class _Slot:
    """A placeholder in the character stream of a template: its name and how it was written."""

    name: str
    written: str  # ``{plan[target]!r:>8}``


_WHERE = {
    "sq": "inside single quotes",
    "dq": "inside double quotes",
    "ansi": "inside $'...' quotes",
    "bq": "inside backticks",
    "brace": "inside ${...}",
    "comment": "in a comment",
    "heredoc": "in a here-document",
    "dollar": "right after $",
    "backslash": "right after a backslash",
}
_WHY = {
    "bq": "a backquote in the value would end the command substitution; use $(...) instead",
    "brace": "the shell does not read quotes there as one word; give the value its own word",
    "comment": "a newline in the value would end the comment; move the placeholder out of it",
    "heredoc": "its body is not split into words, so quoting cannot protect it; "
    "send the text with input=... instead",
    "dollar": "$ turns the quotes around the value into $'...' escapes; "
    "write ${{NAME}} for a shell variable or put a space before the placeholder",
    "backslash": "it escapes the quote that opens the value; remove the backslash",
}


def refuse_unquotable(template: str) -> None:
    """Refuse a shell template with a placeholder where ``shlex.quote`` cannot keep it one word.

    ``shlex.quote`` makes a value one word *where the shell reads words*: outside any quotes,
    comment or here-document. Inside ``'...'``, ``"..."`` or ``$'...'`` its quotes close the
    author's (``echo '{v}'`` with ``v="'; touch X; '"`` runs ``touch``); in a comment a newline
    ends the comment; a here-document's body and backticks re-read the value; a backslash or a
    ``$`` right before it changes how its opening quote is read. Each is ``UnsafeCommand``, one
    line naming where the placeholder is and what to write instead, before anything runs.

    This is a small reading of POSIX ``sh`` (quotes, escapes, ``$(...)``, ``${...}``, backticks,
    comments, here-documents), not a full parser: where it cannot tell, it refuses.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return  # render() has already said what is wrong with it
    items: list[str | _Slot] = []
    for literal, field, spec, conversion in parsed:
        items.extend(literal)
        if field is not None:
            written = (
                field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            )
            items.append(_Slot(re.split(r"[.\[]", field, maxsplit=1)[0], "{" + written + "}"))
    _Reader(template, items).read()


class _Reader:
    """Where each placeholder of a shell template sits, as ``/bin/sh`` would read the text."""

    def __init__(self, template: str, items: list[str | _Slot]) -> None:
        self.template = template
        self.items = items
        # Open contexts, innermost last: [kind, depth, index of the opening quote]. "sh" is a
        # command (the script itself or a ``$(...)``), its depth counts its open parentheses.
        self.stack: list[list[Any]] = [["sh", 0, -1]]
        self.heredocs: list[tuple[str, bool]] = []  # delimiters waiting for the next newline
        self.body: tuple[str, bool] | None = None  # the here-document being read
        self.line: list[str] = []

    def at(self, index: int) -> str | _Slot | None:
        return self.items[index] if index < len(self.items) else None

    def read(self) -> None:
        i, word_start = 0, True
        while i < len(self.items):
            item = self.items[i]
            if self.body is not None:
                i = self._body(i, item)
                continue
            kind = self.stack[-1][0]
            if isinstance(item, _Slot):
                self._slot(i, item, kind)
                i, word_start = i + 1, False
                continue
            if item == "\\":
                if isinstance(self.at(i + 1), _Slot):
                    self._slot(i + 1, self.at(i + 1), "backslash" if kind == "sh" else kind)
                i += 2
                word_start = False
                continue
            if kind == "sh":
                i, word_start = self._command(i, item, word_start)
            elif kind == "comment":
                if item == "\n":
                    self.stack.pop()
                    continue  # the newline ends the comment and is read by the command
                i += 1
            elif kind in ("sq", "ansi"):
                if item == "'":
                    self.stack.pop()
                i += 1
            elif kind == "dq":
                if item == '"':
                    self.stack.pop()
                    i += 1
                elif item == "`":
                    self.stack.append(["bq", 0, i])
                    i += 1
                elif item == "$":
                    i = self._dollar(i)
                else:
                    i += 1
            elif kind == "bq":
                if item == "`":
                    self.stack.pop()
                i += 1
            else:  # brace: ${...}
                top = self.stack[-1]
                if item == "{":
                    top[1] += 1
                elif item == "}":
                    if top[1]:
                        top[1] -= 1
                    else:
                        self.stack.pop()
                i += 1

    def _command(self, i: int, item: str, word_start: bool) -> tuple[int, bool]:
        """One character of a command (outside any quotes); the next index and word state."""
        top = self.stack[-1]
        if item == "'":
            self.stack.append(["sq", 0, i])
        elif item == '"':
            self.stack.append(["dq", 0, i])
        elif item == "`":
            self.stack.append(["bq", 0, i])
        elif item == "$":
            return self._dollar(i), False
        elif item == "#" and word_start:
            self.stack.append(["comment", 0, i])
        elif item == "<" and self.at(i + 1) == "<":
            if self.at(i + 2) == "<":
                return i + 3, True  # a here-string: its word is an ordinary word
            return self._heredoc(i + 2), True
        elif item == "(":
            top[1] += 1
            return i + 1, True
        elif item == ")":
            if top[1]:
                top[1] -= 1
            elif len(self.stack) > 1:
                self.stack.pop()  # the end of a $(...)
            return i + 1, True
        elif item == "\n":
            if self.heredocs:
                self.body, self.line = self.heredocs.pop(0), []
            return i + 1, True
        else:
            return i + 1, item in " \t;&|<>"
        return i + 1, False

    def _dollar(self, i: int) -> int:
        after = self.at(i + 1)
        if isinstance(after, _Slot):
            self._slot(i + 1, after, "dollar" if self.stack[-1][0] == "sh" else "dq")
        in_command = self.stack[-1][0] == "sh"
        if after == "'" and in_command:
            self.stack.append(["ansi", 0, i + 1])
        elif after == '"' and in_command:
            self.stack.append(["dq", 0, i + 1])
        elif after == "(":
            self.stack.append(["sh", 0, i + 1])
        elif after == "{":
            self.stack.append(["brace", 0, i + 1])
        else:
            return i + 1
        return i + 2

    def _heredoc(self, i: int) -> int:
        """Read a here-document's ``[-]WORD`` from ``i``; its body starts at the next newline."""
        strip = self.at(i) == "-"
        i += strip
        while self.at(i) in (" ", "\t"):
            i += 1
        word: list[str] = []
        quote: str | None = None
        while (item := self.at(i)) is not None:
            if isinstance(item, _Slot):
                self._slot(i, item, "heredoc")
            elif quote is not None:
                if item == quote:
                    quote = None
                else:
                    word.append(item)
            elif item in ("'", '"'):
                quote = item
            elif item == "\\" and isinstance(self.at(i + 1), str):
                i += 1
                word.append(str(self.at(i)))
            elif item in " \t\n;&|<>()":
                break
            else:
                word.append(item)
            i += 1
        self.heredocs.append(("".join(word), strip))
        return i

    def _body(self, i: int, item: str | _Slot) -> int:
        if isinstance(item, _Slot):
            self._slot(i, item, "heredoc")
        assert self.body is not None
        if item != "\n":
            self.line.append(str(item))
            return i + 1
        delimiter, strip = self.body
        line = "".join(self.line)
        if (line.lstrip("\t") if strip else line) == delimiter:
            self.body = self.heredocs.pop(0) if self.heredocs else None
        self.line = []
        return i + 1

    def _slot(self, i: int, slot: _Slot | str | None, kind: str) -> None:
        """Refuse the placeholder at ``i`` unless ``kind`` is a command outside backticks."""
        assert isinstance(slot, _Slot)
        if kind == "sh" and any(c[0] == "bq" for c in self.stack):
            kind = "bq"
        if kind == "sh":
            return
        if kind in ("sq", "dq", "ansi"):
            fix = self._unquoted(i)
            why = f"remove the quotes: each placeholder is quoted for you; write {fix!r}"
        else:
            why = _WHY[kind].replace("NAME", slot.name)
        raise UnsafeCommand(
            f"template {self.template!r}: placeholder {slot.written} is {_WHERE[kind]}: {why}",
            source=f"placeholder {slot.written}",
        )

    def _unquoted(self, i: int) -> str:
        """The template with the quotes around the placeholder at ``i`` closed before it and
        opened again after it: ``'hello {n}!'`` -> ``'hello '{n}'!'``, ``"{n}"`` -> ``{n}``."""
        kind, _, opened = self.stack[-1]
        close = '"' if kind == "dq" else "'"
        reopen = [self.items[opened - 1], close] if kind == "ansi" else [close]
        if opened == i - 1:
            before = self.items[: opened - 1] if kind == "ansi" else self.items[:opened]
        else:
            before = [*self.items[:i], close]
        after = self.items[i + 2 :] if self.at(i + 1) == close else [*reopen, *self.items[i + 1 :]]
        return "".join(
            x.written if isinstance(x, _Slot) else x.replace("{", "{{").replace("}", "}}")
            for x in [*before, self.items[i], *after]
        )
