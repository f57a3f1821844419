"""``FakeSSH``: the ``ssh`` resource without a network, scripted per host, every call recorded.

::

    def test_one_bad_host(runbook_runner):
        runbook_runner.ssh.on("web-3", "deployctl install *", returncode=1, stderr="disk full")
        runbook_runner.ssh.unreachable("web-4")
        result = runbook_runner.run("runbooks/fleet.py", version="2.0")
        assert result.hosts["web-3"] == "failed" and result.hosts["web-4"] == "unreached"

Commands are built exactly as the real resource builds them (argv items quoted, template
placeholders quoted), so ``calls`` holds the command line the host would have received.
Unscripted commands succeed with empty output, unless ``strict=True``.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runbook import guard
from runbook.errors import HostUnreachable
from runbook.resources import SSHResult, remote_command_failed

#: The real resource's result type (``shell``'s fields plus ``host``), under the fake's name.
FakeSSHResult = SSHResult


@dataclass
class _Rule:
    host: str
    pattern: str
    regex: bool
    answer: FakeSSHResult | Callable[[str, str], FakeSSHResult] | BaseException
    times: int | None

    def matches(self, host: str, command: str) -> bool:
        if not fnmatch.fnmatchcase(host, self.host):
            return False
        if self.regex:
            return re.search(self.pattern, command) is not None
        return fnmatch.fnmatchcase(command, self.pattern)


def _name(host: Any) -> str:
    return host if isinstance(host, str) else getattr(host, "name", str(host))


class FakeSSH:
    """Scripted results by host glob and command glob (or regex); the newest rule wins."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.calls: list[tuple[str, str]] = []  # (host name, command line)
        self.unsafe_calls: list[tuple[str, str]] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._ctx: Any = None  # set on the per-run view runbook_bind() returns

    def runbook_bind(self, ctx: Any) -> FakeSSH:
        """The view of this fake one run uses; the engine asks for it at each run's start.

        It shares this fake's rules and records, and checks commands against that run's params
        and outputs exactly as the real ``ssh`` does (the f-string trap is refused offline).
        """
        view = copy.copy(self)
        view._ctx = ctx
        return view

    def _text(self, command: str | Sequence[Any], values: dict[str, Any]) -> str:
        """The command line as the real resource builds and checks it (the f-string trap)."""
        return guard.prepare(
            command, values, ctx=self._ctx, options=guard.SSH_OPTIONS, call="ssh", prefix="host, "
        ).text

    def on(
        self,
        host: str = "*",
        pattern: str = "*",
        *,
        stdout: str = "",
        stderr: str = "",
        returncode: int = 0,
        raises: BaseException | None = None,
        regex: bool = False,
        times: int | None = None,
        handler: Callable[[str, str], FakeSSHResult] | None = None,
    ) -> FakeSSH:
        """Script what ``pattern`` run on hosts matching ``host`` answers, so a test decides
        which host fails and how; ``times`` limits a rule to its first calls. Chainable."""
        answer: FakeSSHResult | Callable[[str, str], FakeSSHResult] | BaseException = (
            raises or handler or FakeSSHResult(pattern, returncode, stdout, stderr)
        )
        self._rules.insert(0, _Rule(host, pattern, regex, answer, times))
        return self

    def unreachable(self, host: str, reason: str = "connection refused") -> FakeSSH:
        """Every command to ``host`` raises ``HostUnreachable`` (reported ``unreached``)."""
        return self.on(host, "*", raises=HostUnreachable(host, reason))

    def ran(self, host: str, pattern: str) -> bool:
        """Whether a command matching ``pattern`` (glob) reached a host matching ``host``: what
        a test asserts about side effects, since the fake runs nothing."""
        return any(
            fnmatch.fnmatchcase(h, host) and fnmatch.fnmatchcase(c, pattern) for h, c in self.calls
        )

    def commands_on(self, host: str) -> list[str]:
        """Every command one host received, in order: to assert a per-host sequence."""
        return [c for h, c in self.calls if h == host]

    def hosts(self) -> list[str]:
        """Hosts that received at least one command, in first-call order."""
        return list(dict.fromkeys(h for h, _ in self.calls))

    def __call__(
        self,
        host: Any,
        command: str | Sequence[Any],
        /,
        *,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        **values: Any,
    ) -> FakeSSHResult:
        """Same signature as the real ``ssh`` resource, so steps run unchanged against it."""
        return self._answer(_name(host), self._text(command, values), check)

    async def arun(
        self,
        host: Any,
        command: str | Sequence[Any],
        /,
        *,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        **values: Any,
    ) -> FakeSSHResult:
        """``ssh.arun`` for async steps; answers from the same rules."""
        return self._answer(_name(host), self._text(command, values), check)

    def unsafe(
        self, host: Any, command: str, /, *, check: bool = True, timeout: float | None = None
    ) -> FakeSSHResult:
        """``ssh.unsafe`` (a raw shell line); kept apart in ``unsafe_calls`` too, so a test can
        assert that no command went through the escape hatch."""
        text = guard.prepare_unsafe(command, ctx=self._ctx, via="ssh.unsafe", host=_name(host)).text
        with self._lock:
            self.unsafe_calls.append((_name(host), text))
        return self._answer(_name(host), text, check)

    def _answer(self, host: str, text: str, check: bool) -> FakeSSHResult:
        with self._lock:
            self.calls.append((host, text))
            rule = next((r for r in self._rules if r.matches(host, text) and r.times != 0), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
        if rule is None:
            if self.strict:
                raise AssertionError(f"unexpected command in strict FakeSSH: {host}: {text}")
            return FakeSSHResult(text, 0, "", "", host=host)
        if isinstance(rule.answer, BaseException):
            raise rule.answer
        got = rule.answer if isinstance(rule.answer, FakeSSHResult) else rule.answer(host, text)
        result = FakeSSHResult(text, got.returncode, got.stdout, got.stderr, host=host)
        if check and result.returncode != 0:
            raise remote_command_failed(result, lambda t: guard.mask(self._ctx, t))
        return result
