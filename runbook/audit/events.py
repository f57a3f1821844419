"""Audit events and their hash chain.

Each sink owns one chain: it stamps ``seq`` and ``prev_hash`` at append time under its own lock
(a file lock, a transaction), so several processes appending to one sink still form one chain.
``hash`` is SHA-256 over the canonical JSON of the event without ``hash``; changing any byte of any
field, removing, inserting or reordering an event breaks the chain at a point that
``runbook.audit.verify.verify_chain`` names.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from runbook.audit.canonical import canonical_json, encode, encode_str, loads_strict

if TYPE_CHECKING:
    from runbook.audit.query import AuditQuery
    from runbook.audit.verify import Check, VerifyReport

GENESIS = "0" * 64

KINDS = (
    "run_started",
    "run_finished",
    "step_started",
    "step_succeeded",
    "step_failed",
    "step_retried",
    "step_skipped",
    "host_failed",  # one host of a fleet failed or was unreached (runbook.fleet); the run may go on
    "step_interrupted",
    "approval_requested",
    "approval_granted",
    "approval_denied",
    "approval_refused",
    "approval_expired",
    "lock_acquired",
    "lock_released",
    "lock_denied",
    "rollback_started",
    "rollback_succeeded",
    "rollback_failed",
    "run_paused",
    "run_resumed",
    "run_cancelled",
    "change_recorded",
    "notification_failed",
    "analysis_measured",
    "unsafe_command",
    "checkpoint",  # a signed statement of the chain's head (audit_key; runbook.audit.checkpoint)
)


@dataclass(frozen=True)
class AuditEvent:
    kind: str
    run_id: str
    runbook: dict[str, str] = field(default_factory=dict)  # {"path": ..., "sha256": ...}
    step: str | None = None
    actor: str = ""
    host: str = ""
    env: str = ""
    at: str = ""  # UTC ISO-8601
    params: dict[str, Any] = field(default_factory=dict)  # already redacted
    data: dict[str, Any] = field(default_factory=dict)  # already redacted
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: ``asdict`` deep-copies every payload, which dominated the cost of
        # auditing a step. Callers serialise the result; they do not mutate it.
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditEvent:
        known = set(cls.__dataclass_fields__)
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown audit field(s): {', '.join(sorted(extra))}")
        return cls(**data)

    def chained(
        self, seq: int, prev_hash: str, *, line: bool = True, keep: bool = False
    ) -> AuditEvent:
        """This event stamped as number ``seq`` after ``prev_hash``, with its own hash.

        A non-finite float in ``params`` or ``data`` (a step output of ``nan``) has no JSON form:
        it is stored as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` rather than as
        invalid JSON or as a refused event that would stop the run after its side effect.

        Serialised once: each field's canonical JSON is computed one time and assembled into
        both the hashed text (without ``hash``) and the stored line (``canonical``), which is
        byte for byte ``canonical_json(stored.to_dict())``. ``line=False``: no stored line, for
        a sink that keeps the event itself (``memory://``), not its text.

        ``keep``: a draft (``Recorder.build``'s, not yet chained by any sink) is stamped itself
        rather than copied, for a sink that keeps the object (``memory://``): the pipeline
        hands its drafts to no one else, and the next sink to chain it copies it as usual, as
        it now has a hash. Any other event is copied: an event from outside is never changed.
        """
        try:
            head, tail = _halves(self.__dict__, seq, prev_hash)
            source = self
        except ValueError:
            source = replace(self, params=_finite(self.params), data=_finite(self.data))
            head, tail = _halves(source.__dict__, seq, prev_hash)
        digest = hashlib.sha256((head + tail).encode()).hexdigest()
        values = source.__dict__
        if keep and source is self and values.get("_draft") and values["hash"] is None:
            stored = self  # the copy below, without the copy
        else:
            stored = object.__new__(AuditEvent)
            values = stored.__dict__
            values.update(source.__dict__)
        values["seq"], values["prev_hash"], values["hash"] = seq, prev_hash, digest
        if line:
            values["_canonical"] = f'{head}"hash":"{digest}",{tail}'
        return stored

    @classmethod
    def of(cls, values: dict[str, Any]) -> AuditEvent:
        """An event from a complete dict of its fields (and maybe ``_texts``: ``with_texts``),
        without the frozen dataclass's ``__init__`` (a quarter of the cost of building one);
        for the recorder's hot path. The event takes ``values`` over as its own: a fresh dict."""
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", values)
        return event

    def with_texts(self, texts: dict[str, str]) -> AuditEvent:
        """This event told the canonical JSON of some fields (``runbook``, ``params``: the same
        for every event of a run), so ``chained`` does not serialise them again. The texts must
        be ``canonical_json`` of the field values; the recorder builds them from those values."""
        values = self.__dict__
        values["_texts"] = texts
        values["_frame"] = event_frame(texts)
        return self

    @property
    def canonical(self) -> str | None:
        """The stored line (canonical JSON with ``hash``) when this event was chained here."""
        return self.__dict__.get("_canonical")

    @property
    def at_datetime(self) -> datetime:
        return datetime.fromisoformat(self.at)

    def stored_line(self) -> str:
        """The JSON a file or SQL sink stores: the line ``chained`` built, else serialised now."""
        return self.canonical or canonical_json(self.to_dict())


_FIELDS = tuple(AuditEvent.__dataclass_fields__)
# (field, its JSON key) in canonical (sorted) order without ``hash``; where ``hash`` goes.
_SORTED = tuple((n, json.dumps(n)) for n in sorted(f for f in _FIELDS if f != "hash"))
# ``_halves`` writes these out by hand: a new field must be added there too.
if [n for n, _ in _SORTED] != [
    "actor",
    "at",
    "data",
    "env",
    "host",
    "kind",
    "params",
    "prev_hash",
    "run_id",
    "runbook",
    "seq",
    "step",
]:
    raise RuntimeError("_halves must name every field of AuditEvent")
_NO_TEXTS: dict[str, str] = {}
# ``_halves`` cuts the text where ``hash`` goes: after ``env``, before ``host``.
if sorted(_FIELDS).index("hash") != [n for n, _ in _SORTED].index("host"):
    raise RuntimeError("_halves must put hash between env and host")


def event_frame(texts: dict[str, str]) -> tuple[str, str, str, str, str] | None:
    """The stretches of an event's canonical text that are the same in every event of a run
    whose canonical ``texts`` (``with_texts``) include the actor: written once per run, so
    ``_halves`` only fills in ``at``, ``data``, ``kind``, ``prev_hash``, ``seq`` and ``step``.
    None when a text is missing (the event is then written field by field)."""
    try:
        actor, env, host = texts["actor"], texts["env"], texts["host"]
        params, run_id, runbook = texts["params"], texts["run_id"], texts["runbook"]
    except KeyError:
        return None
    return (
        f'{{"actor":{actor},"at":',
        f',"env":{env},',
        f'"host":{host},"kind":',
        f',"params":{params},"prev_hash":',
        f',"run_id":{run_id},"runbook":{runbook},"seq":',
    )


def _halves(v: dict[str, Any], seq: int, prev_hash: str) -> tuple[str, str]:
    """An event's canonical JSON without ``hash`` (its fields ``v``), cut where ``"hash"`` goes
    (between ``env`` and ``host``): ``head + tail`` is the hashed text and
    ``head + '"hash":"...",' + tail`` the stored line. Written out field by field in sorted key
    order, since this is the audit's hot path (``_SORTED`` checks at import that it names every
    field); from the run's ``event_frame`` where the recorder gave one. A non-finite float raises
    ``ValueError``, as ``canonical_json`` does."""
    enc, text = encode, encode_str
    at, kind, step = v["at"], v["kind"], v["step"]
    frame = v.get("_frame")
    if (
        frame is not None
        and type(at) is str
        and type(kind) is str
        and type(prev_hash) is str
        and type(seq) is int
    ):
        actor_at, env, host_kind, params_prev, ids_seq = frame
        return (
            f'{actor_at}{text(at)},"data":{enc(v["data"])}{env}',
            f"{host_kind}{text(kind)}{params_prev}{text(prev_hash)}{ids_seq}{int.__repr__(seq)},"
            f'"step":{text(step) if type(step) is str else enc(step)}}}',
        )
    t = v.get("_texts") or _NO_TEXTS  # canonical texts the recorder computed once per run
    head = (
        f'{{"actor":{t.get("actor") or enc(v["actor"])},'
        f'"at":{text(at) if type(at) is str else enc(at)},'
        f'"data":{enc(v["data"])},'
        f'"env":{t.get("env") or enc(v["env"])},'
    )
    tail = (
        f'"host":{t.get("host") or enc(v["host"])},'
        f'"kind":{text(kind) if type(kind) is str else enc(kind)},'
        f'"params":{t.get("params") or enc(v["params"])},'
        f'"prev_hash":{text(prev_hash) if type(prev_hash) is str else enc(prev_hash)},'
        f'"run_id":{t.get("run_id") or enc(v["run_id"])},'
        f'"runbook":{t.get("runbook") or enc(v["runbook"])},'
        f'"seq":{int.__repr__(seq) if type(seq) is int else enc(seq)},'
        f'"step":{text(step) if type(step) is str else enc(step)}}}'
    )
    return head, tail


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its name (see ``AuditEvent.chained``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def parse_event(text: str | bytes) -> AuditEvent:
    """One stored event (its canonical JSON) back into an ``AuditEvent``; ``ValueError`` if not:
    also when a field has a type runbook never writes there (a ``seq`` of ``"1"``, a ``data``
    list) or a string no UTF-8 text can hold (a lone surrogate, written as ``\\ud800``). Such a
    line may even be hashed correctly; it is still not an event, and nothing downstream (the
    chain, a checkpoint's check, the output) has to guard against its shape."""
    data = loads_strict(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for name, value in data.items():
        kinds = _FIELD_TYPES.get(name)
        if kinds is not None and (type(value) not in kinds):
            what = _JSON_NAMES.get(type(value), "a value")
            raise ValueError(f"field {name} is {what}, not {_FIELD_NAMES[name]}")
    escaped = b"\\u" in text if isinstance(text, bytes) else "\\u" in text
    if escaped:  # an escape: maybe a lone surrogate
        try:
            canonical_json(data).encode()
        except UnicodeEncodeError:
            raise ValueError("it holds text that is not valid Unicode (a lone surrogate)") from None
    try:
        return AuditEvent.from_dict(data)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


# The JSON types a stored event's fields have (``type`` is exact: a bool is not a seq).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **{name: (str,) for name in ("kind", "run_id", "actor", "host", "env", "at")},
    **{name: (dict,) for name in ("runbook", "params", "data")},
    **{name: (str, type(None)) for name in ("step", "prev_hash", "hash")},
    "seq": (int, type(None)),
}
_JSON_NAMES = {
    str: "a string",
    dict: "an object",
    list: "an array",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}
_FIELD_NAMES = {
    name: " or ".join(_JSON_NAMES[kind] for kind in kinds) for name, kinds in _FIELD_TYPES.items()
}


def chain_after(seq: int, prev_hash: str, events: Iterable[AuditEvent]) -> list[AuditEvent]:
    """``events`` chained one after another, the first as number ``seq + 1`` after
    ``prev_hash``: what a sink appending a batch does under its lock, after reading its head."""
    out = []
    for event in events:
        seq += 1
        stored = event.chained(seq, prev_hash)
        prev_hash = stored.hash or GENESIS
        out.append(stored)
    return out


def event_hash(event: AuditEvent) -> str:
    body = event.to_dict()
    body.pop("hash", None)
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@runtime_checkable
class AuditSink(Protocol):
    """Opened from a URL by a plugin (``runbook_audit_sinks`` hook).

    ``append`` must be durable when it returns (or raise): the engine does not take the next side
    effect until every non-best-effort sink has accepted the event.
    """

    url: str
    best_effort: bool

    def append(self, event: AuditEvent) -> AuditEvent:
        """Chain (seq, prev_hash, hash) and persist the event; return it as stored."""
        ...

    def events(self, query: AuditQuery | None = None) -> Iterator[AuditEvent]:
        """Stored events in chain order, filtered."""
        ...

    def verify(self, checks: Sequence[Check] = ()) -> VerifyReport:
        """The chain re-computed in one pass, with ``checks`` seeing every event (a sink written
        before ``checks`` existed may take no argument; ``runbook.audit.verify`` copes)."""
        ...

    def close(self) -> None: ...


# Where the names this module used to define live now: a plugin written against the old paths
# (docs/plugins.md named ``runbook.audit.events.Check``) keeps importing them from here.
_MOVED = {
    "AuditQuery": "runbook.audit.query",
    "BadEvent": "runbook.audit.verify",
    "Check": "runbook.audit.verify",
    "VerifyReport": "runbook.audit.verify",
    "verify_chain": "runbook.audit.verify",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
