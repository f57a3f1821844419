"""Who someone is, for comparisons: normalised names and the ``group:NAME`` approver syntax.

Identities are typed by people (``--as``, ``RUNBOOK_ACTOR``, ``approvers = [...]``,
``allowed_signers`` principals). Four eyes only means something if ``ops``, ``OPS`` and a
full-width ``ｏｐｓ`` are one person, so every comparison goes through :func:`normalize`
(Unicode NFKC, then casefold, then strip). What is *recorded* stays as typed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence

GROUP_PREFIX = "group:"


def normalize(name: str) -> str:
    """The form two identities are compared in: NFKC, casefolded, surrounding space removed."""
    return unicodedata.normalize("NFKC", name).casefold().strip()


def same(a: str, b: str) -> bool:
    return normalize(a) == normalize(b)


def distinct(names: Iterable[str]) -> set[str]:
    """How many people these names are: the set of their normal forms."""
    return {normalize(n) for n in names}


def expand(entries: Sequence[str], groups: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Approver entries with every ``group:NAME`` replaced by the group's members.

    An unknown group is an error, not an empty list: a typo must not silently open (or close)
    a gate.
    """
    out: list[str] = []
    for entry in entries:
        if entry.startswith(GROUP_PREFIX):
            out.extend(members(entry[len(GROUP_PREFIX) :], groups))
        else:
            out.append(entry)
    return tuple(out)


def members(group: str, groups: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    if group not in groups:
        known = ", ".join(sorted(groups)) or "none configured"
        raise KeyError(f"unknown group {group!r} ([tool.runbook.groups]: {known})")
    return tuple(groups[group])


def member_of(actor: str, group: str, groups: Mapping[str, Sequence[str]]) -> bool:
    return normalize(actor) in distinct(members(group, groups))
