"""The pytest plugin (entry point ``pytest11``): fixtures, and ``pytest --runbooks DIR``.

Fixtures: ``runbook_runner`` (runs a runbook with every fake below and an in-memory store),
``fake_shell``, ``fake_clock``, ``fake_router``, ``fake_notifier``. ``pytest --runbooks DIR``
collects every runbook under DIR as a test item that runs it with fakes and fails on a definition
error or a run that does not succeed. A runbook may set a module-level ``TEST`` dict to steer its
item: ``{"params": {...}, "env": "dev", "resources": {name: value or factory(tmp_path)},
"expect": "succeeded", "skip": "reason"}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from runbook.resources import Http
from runbook.testing.fakes import FakeClock, FakeNotifier, FakeShell, MissingFreezegun
from runbook.testing.ssh import FakeSSH

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

ALL_KINDS = None  # notification rule "on" for every kind


FAKE_ORIGIN = "fake: "  # origin of a ResourceDef swapped for its declared fake


class UnfakedResource(Exception):
    """A runbook's own resource would run for real in a test: the message names each one and
    the three ways to fake it."""

    def __init__(self, resources: list[Any]) -> None:
        self.resources = [r.name for r in resources]
        where = ", ".join(
            f"{r.name!r} ({r.origin}{':' + str(r.line) if r.line else ''})" for r in resources
        )
        first = resources[0].name
        super().__init__(
            f"resource(s) {where} would reach a real system in a test. Fake each one, by:\n"
            f'  1. TEST = {{"resources": {{"{first}": lambda tmp: ...}}}} in the runbook;\n'
            f'  2. runbook_runner.run(path, runner={{"resources": {{"{first}": fake}}}}) '
            "(or a fixture that provides it);\n"
            f"  3. @resource(fake=make_fake_{first}) on the resource itself."
        )


def offline(rb: Any, provided: Iterable[str]) -> Any:
    """``rb`` with each of its own resources (runbook and ``runbookconf.py``) replaced by its
    declared fake; raise ``UnfakedResource`` for any that has neither a fake nor a replacement
    in ``provided``. The built-ins are faked by the runner itself."""
    from dataclasses import replace

    from runbook.markers import RESOURCE_ATTR

    provided = set(provided)
    swapped: dict[str, Any] = {}
    missing = []
    for name, res in rb.resources.items():
        if name in provided or res.origin.startswith(FAKE_ORIGIN):
            continue
        fake = getattr(getattr(res.func, RESOURCE_ATTR, None), "fake", None)
        if fake is None:
            missing.append(res)
        else:
            swapped[name] = replace(res, func=fake, origin=FAKE_ORIGIN + res.origin)
    if missing:
        raise UnfakedResource(missing)
    return replace(rb, resources={**rb.resources, **swapped}) if swapped else rb


def _offline_runner_class() -> type:
    from runbook.runner import Runner

    class OfflineRunner(Runner):
        """A Runner that never runs a runbook's real resources (DESIGN 18)."""

        def load(self, runbook: Any, *args: Any, **kwargs: Any) -> Any:
            return offline(super().load(runbook, *args, **kwargs), self.resources)

    return OfflineRunner


class RunbookRunner:
    """Runs runbooks in a test with fakes; one shared in-memory store per test.

    ``run(path, **params)`` returns the ``RunResult``; ``runner(**kwargs)`` gives the configured
    ``Runner`` for anything else (approve, resume, deny, cancel).
    """

    def __init__(
        self,
        *,
        shell: FakeShell,
        clock: FakeClock,
        router: Any,
        notifier: FakeNotifier,
        ssh: FakeSSH | None = None,
    ) -> None:
        self.shell = shell
        self.ssh = ssh if ssh is not None else FakeSSH()
        self.clock = clock
        self.router = router
        self.notifier = notifier
        self.store_url = f"memory://test-{uuid.uuid4().hex}"
        self.locks_url = f"memory://test-{uuid.uuid4().hex}"

    def runner(self, **kwargs: Any) -> Any:
        """A ``Runner`` wired to this test's fakes and store, for what ``run`` does not cover
        (approve, resume, deny, cancel): every call sees the same runs. ``kwargs`` override."""
        from runbook.audit.events import KINDS

        resources = {
            "shell": self.shell,
            "clock": self.clock,
            "router": self.router,
            "ssh": self.ssh,
            **kwargs.pop("resources", {}),
        }
        kwargs.setdefault("store", self.store_url)
        kwargs.setdefault("locks", self.locks_url)
        kwargs.setdefault("actor", "tester")
        kwargs.setdefault("seed", 0)
        kwargs.setdefault("notify", [{"to": "fake://", "on": list(KINDS)}])
        plugins = [self.notifier.plugin, *kwargs.pop("plugins", [])]
        return _offline_runner_class()(resources=resources, plugins=plugins, **kwargs)

    def run(
        self,
        runbook: Any,
        *,
        env: str = "dev",
        runner: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> Any:
        """Run ``runbook`` (a path or a loaded one) with ``params``; ``runner`` holds ``Runner``
        options for this run only (``{"protection": "none"}``, ``{"resources": ...}``)."""
        return self.runner(env=env, **dict(runner or {})).run(runbook, params=params)


@pytest.fixture
def fake_shell() -> FakeShell:
    return FakeShell()


@pytest.fixture
def fake_ssh() -> FakeSSH:
    return FakeSSH()


@pytest.fixture
def fake_clock() -> Iterator[FakeClock]:
    """A FakeClock that ``datetime.now()`` follows too (freezegun: ``runbook[testing]``)."""
    try:
        clock = FakeClock()
    except MissingFreezegun as exc:
        pytest.fail(str(exc), pytrace=False)
    with clock:
        yield clock


@pytest.fixture
def fake_router() -> Any:
    from runbook.testing.router import FakeRouter

    return FakeRouter()


@pytest.fixture
def fake_notifier() -> FakeNotifier:
    return FakeNotifier()


@pytest.fixture
def runbook_runner(
    request: pytest.FixtureRequest,
    fake_shell: FakeShell,
    fake_router: Any,
    fake_notifier: FakeNotifier,
    fake_ssh: FakeSSH,
) -> RunbookRunner:
    """Runs with fakes. Time is the test's ``fake_clock`` when it asks for one; otherwise a
    FakeClock that leaves ``datetime`` alone (no freezegun for tests that did not want it)."""
    if "fake_clock" in request.fixturenames:
        clock = request.getfixturevalue("fake_clock")
    else:
        clock = FakeClock(freeze=False)
    return RunbookRunner(
        shell=fake_shell, clock=clock, router=fake_router, notifier=fake_notifier, ssh=fake_ssh
    )


# -- pytest --runbooks DIR ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("runbook")
    group.addoption(
        "--runbooks",
        action="append",
        default=[],
        metavar="DIR",
        help="collect every runbook under DIR as a test run with fakes",
    )


def pytest_configure(config: pytest.Config) -> None:
    dirs = [Path(d).resolve() for d in config.getoption("runbooks") or []]
    config.stash[_DIRS] = dirs
    for d in dirs:
        given = [Path(a.split("::")[0]).resolve() for a in config.args]
        if d in given:
            continue
        if any(d in g.parents for g in given):
            # pytest 8 merges a directory argument into a file argument inside it and collects
            # only the file: name the runbooks one by one so both are collected.
            config.args.extend(str(f) for f in _runbook_files(d) if f not in given)
        else:
            config.args.append(str(d))


_DIRS = pytest.StashKey[list]()


def _is_runbook(path: Path, dirs: list[Path]) -> bool:
    return (
        path.suffix == ".py"
        and not path.name.startswith(("_", "test_"))
        and path.name != "runbookconf.py"
        and any(d == path.parent or d in path.parents for d in dirs)
    )


def _runbook_files(d: Path) -> list[Path]:
    return sorted(
        f
        for f in d.rglob("*.py")
        if _is_runbook(f, [d])
        and not any(p.startswith((".", "__")) for p in f.relative_to(d).parts[:-1])
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_runbook(file_path, parent.config.stash.get(_DIRS, [])):
        return RunbookFile.from_parent(parent, path=file_path)
    return None


class RunbookFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        yield RunbookItem.from_parent(self, name=f"run[{self.path.stem}]")


def _example(spec: Any) -> Any:
    from runbook.params import REQUIRED

    if spec.example is not REQUIRED:
        return spec.example
    if spec.choices is not None:
        try:
            return next(iter(spec.choices))
        except TypeError:
            pass
    return {int: 1, float: 1.0, bool: False}.get(spec.type, "example")


def _test_resource_names(path: Path) -> list[str]:
    """Keys of ``TEST["resources"]``, read from the source: a resource only the test provides
    (one a plugin supplies in production) must be known before the runbook is collected."""
    import ast

    try:
        tree = ast.parse(path.read_text())
    except (SyntaxError, OSError, UnicodeDecodeError):
        return []  # load() reports it properly
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(isinstance(t, ast.Name) and t.id == "TEST" for t in node.targets)
        ):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "resources"
                    and isinstance(value, ast.Dict)
                ):
                    return [
                        k.value
                        for k in value.keys
                        if isinstance(k, ast.Constant) and isinstance(k.value, str)
                    ]
    return []


class RunbookItem(pytest.Item):
    def runtest(self) -> None:
        import tempfile

        from runbook.collect import load
        from runbook.errors import DefinitionError

        try:
            rb = load(self.path, extra_names=[*_test_resource_names(self.path), "ssh"])
        except DefinitionError as exc:
            raise RunbookFailed(f"definition error: {exc}") from None
        spec = getattr(rb.module, "TEST", {}) or {}
        if spec.get("skip"):
            pytest.skip(spec["skip"])
        try:
            rb = offline(rb, spec.get("resources", {}))
        except UnfakedResource as exc:
            raise RunbookFailed(str(exc)) from None
        params = {n: _example(p) for n, p in rb.params.items() if p.required}
        params.update(spec.get("params", {}))
        # No freezegun here: the run's own time is the fake clock, and pytest's timer is left
        # alone (``--durations``), with or without ``runbook[testing]`` installed.
        clock = FakeClock(freeze=False)
        with tempfile.TemporaryDirectory() as tmp:
            resources: dict[str, Any] = {
                "http": Http(
                    transport=httpx.MockTransport(
                        lambda request: httpx.Response(200, json={"status": "ok"})
                    )
                ),
            }
            for name, value in spec.get("resources", {}).items():
                resources[name] = value(Path(tmp)) if callable(value) else value
            from runbook.testing.router import FakeRouter

            runner = RunbookRunner(
                shell=FakeShell(), clock=clock, router=FakeRouter(), notifier=FakeNotifier()
            )
            result = runner.run(
                rb,
                env=spec.get("env", "dev"),
                runner={"protection": "none", "resources": resources},
                **params,
            )
        expected = spec.get("expect", "succeeded")
        if result.status != expected:
            lines = [f"run {result.status} (expected {expected}): {result.error or ''}"]
            lines += [
                f"  {n}: {s.status}{' - ' + s.error if s.error else ''}"
                for n, s in result.steps.items()
            ]
            raise RunbookFailed("\n".join(lines))

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, RunbookFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"runbook {self.path.name}"


class RunbookFailed(Exception):
    """A runbook item failed: its message is the whole report, no traceback needed."""
