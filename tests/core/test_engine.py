"""The engine, as a user sees it through ``Runner.run``: order, parallelism, injection, skipping,
retries, timeouts, rollback, output checks, secrets, cancellation and the audit safety stop."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import uuid
from dataclasses import asdict
from typing import Any

import pytest
from freezegun import api as freezegun_api

from runbook import Runner, load
from runbook.audit.events import AuditEvent
from runbook.audit.memory import MemorySink
from runbook.errors import StepTimeout
from runbook.testing import FakeShell


def wall_clock() -> float:
    """The real perf counter even while freezegun (the fake clock) patches ``time``."""
    return freezegun_api.real_perf_counter()


@pytest.fixture
def runner(store_url):
    """``runner(**kwargs)``: a Runner on this test's own store and locks."""

    def make(**kwargs: Any) -> Runner:
        kwargs.setdefault("store", store_url)
        kwargs.setdefault("locks", f"memory://core-locks-{uuid.uuid4().hex}")
        kwargs.setdefault("actor", "tester")
        kwargs.setdefault("seed", 0)
        return Runner(**kwargs)

    return make


def kinds(result, step: str | None = None) -> list[str]:
    return [e.kind for e in result.audit if step is None or e.step == step]


# -- order and parallelism ----------------------------------------------------------------------


def test_hundred_step_dag_runs_in_dependency_order_and_passes_outputs(write_runbook, runner):
    rng = random.Random(1234)
    lines = ["from runbook import step", "LOG = []"]
    data_preds: dict[int, list[int]] = {}
    order_preds: dict[int, list[int]] = {}
    for i in range(100):
        earlier = list(range(i))
        data_preds[i] = sorted(rng.sample(earlier, k=min(len(earlier), rng.randint(0, 3))))
        rest = [j for j in earlier if j not in data_preds[i]]
        order_preds[i] = sorted(rng.sample(rest, k=min(len(rest), rng.randint(0, 1))))
        args = ", ".join(f"s{j}" for j in data_preds[i])
        after = ", ".join(f"'s{j}'" for j in order_preds[i])
        total = " + ".join(f"s{j}" for j in data_preds[i]) or "0"
        lines += [
            f"@step(after=[{after}])",
            f"def s{i}({args}):",
            f"    LOG.append(('start', 's{i}'))",
            f"    LOG.append(('end', 's{i}'))",
            f"    return 1 + {total}",
        ]
    # Written in reverse so definition order cannot be what makes the order right.
    blocks = ["\n".join(lines[2 + 5 * i : 7 + 5 * i]) for i in range(100)]
    source = "\n".join(lines[:2]) + "\n" + "\n\n".join(reversed(blocks)) + "\n"
    rb = load(write_runbook(source))
    result = runner().run(rb)
    assert result.status == "succeeded", result.error
    log = rb.module.LOG
    assert len(log) == 200
    at = {event: index for index, event in enumerate(log)}
    edges = 0
    for i in range(100):
        for j in data_preds[i] + order_preds[i]:
            assert at[("end", f"s{j}")] < at[("start", f"s{i}")], f"s{j} must finish before s{i}"
            edges += 1
    assert edges > 100
    expected: dict[int, int] = {}
    for i in range(100):
        expected[i] = 1 + sum(expected[j] for j in data_preds[i])
        assert result.steps[f"s{i}"].output == expected[i]


# Each branch waits at a barrier for the other. Run one after the other, the first would wait
# alone until the barrier breaks and fail the run: passing proves they overlapped, in no time.
MEET_SYNC = """
    import threading
    from runbook import step
    MET = threading.Barrier(2, timeout=30)

    @step
    def left():
        MET.wait()

    @step
    def right():
        MET.wait()
"""

MEET_ASYNC = """
    import asyncio
    from runbook import step
    MET = asyncio.Barrier(2)

    @step
    async def left():
        async with asyncio.timeout(30):
            await MET.wait()

    @step
    async def right():
        async with asyncio.timeout(30):
            await MET.wait()
"""


@pytest.mark.parametrize("source", [MEET_SYNC, MEET_ASYNC], ids=["sync", "async"])
def test_independent_steps_overlap(write_runbook, runner, source):
    rb = load(write_runbook(source))
    result = runner().run(rb)
    assert result.status == "succeeded", "two independent branches did not run at the same time"
    assert not rb.module.MET.broken


# Each branch stays running for many turns of the event loop and notes every turn on which the
# other one was running too: a second step task that had been started would have run by then.
OVERLAP = """
    import asyncio
    from runbook import step
    RUNNING = set()
    OVERLAPS = []

    async def hold(name):
        RUNNING.add(name)
        for _ in range(50):
            await asyncio.sleep(0)  # a turn of the loop, not time
            if len(RUNNING) > 1:
                OVERLAPS.append(sorted(RUNNING))
        RUNNING.discard(name)

    @step
    async def left():
        await hold("left")

    @step
    async def right():
        await hold("right")
"""


@pytest.mark.parametrize(("max_parallel", "overlap"), [(1, False), (8, True)])
def test_max_parallel_one_serialises(write_runbook, runner, max_parallel, overlap):
    """max_parallel=8 is the control: the same steps are seen overlapping when they may."""
    rb = load(write_runbook(OVERLAP))
    assert runner(max_parallel=max_parallel).run(rb).status == "succeeded"
    assert bool(rb.module.OVERLAPS) is overlap


def test_max_parallel_one_runs_sync_steps_one_after_the_other(write_runbook, runner):
    rb = load(
        write_runbook("""
        import threading
        from runbook import step
        SEEN = []

        @step
        def left():
            SEEN.append(("start", threading.current_thread()))
            SEEN.append(("end", threading.current_thread()))

        @step
        def right():
            SEEN.append(("start", threading.current_thread()))
            SEEN.append(("end", threading.current_thread()))
    """)
    )
    assert runner(max_parallel=1).run(rb).status == "succeeded"
    seen = rb.module.SEEN
    assert [what for what, _ in seen] == ["start", "end", "start", "end"]
    assert len({thread for _, thread in seen}) == 1  # one worker thread for one slot


def test_sync_steps_run_in_worker_threads_async_steps_on_the_loop(write_runbook, runner):
    rb = load(
        write_runbook("""
        import threading
        from runbook import step
        SEEN = {}

        @step
        def blocking():
            SEEN["sync"] = threading.current_thread()

        @step
        async def nonblocking():
            SEEN["async"] = threading.current_thread()
    """)
    )
    assert runner().run(rb).status == "succeeded"
    seen = rb.module.SEEN
    assert seen["async"] is threading.current_thread()  # asyncio.run drives the loop right here
    assert seen["sync"] is not threading.current_thread()
    assert seen["sync"].name.startswith("runbook-step")


# -- injection ----------------------------------------------------------------------------------


def test_injection_by_name_of_outputs_resources_and_builtins(write_runbook, runner, fake_clock):
    rb = load(
        write_runbook("""
        from runbook import param, resource, step
        version = param("version")
        GOT = {}

        @resource
        def registry(env):
            return f"registry-{env}"

        @step
        def plan(params):
            return {"version": params.version}

        @step
        def stage(plan, registry, ctx, params, env, clock, shell, log, injector, database):
            GOT.update(step=ctx.step, plan=plan, registry=registry, ctx=ctx, params=params, env=env,
                       clock=clock, shell=shell, log=log, injector=injector, database=database)
            shell("deployctl install " + plan["version"])
            return injector.call(lambda plan, registry, color: [plan["version"], registry, color],
                                 color="green")
    """),
        extra_names={"database"},
    )  # names only the Runner's resources provide
    shell = FakeShell()
    result = runner(
        env="staging",
        params={"version": "1.4"},
        clock=fake_clock,
        resources={"shell": shell, "database": "db-conn"},
    ).run(rb)
    assert result.status == "succeeded", result.error
    got = rb.module.GOT
    assert got["plan"] == {"version": "1.4"}
    assert got["registry"] == "registry-staging"
    assert got["ctx"].run_id == result.run_id and got["ctx"].env == "staging"
    assert got["ctx"].actor == "tester" and got["step"] == "stage"
    assert got["params"].version == "1.4" and got["env"] == "staging"
    assert got["clock"] is fake_clock and got["database"] == "db-conn"
    # A fake is bound to the run (it checks commands against this run's values), sharing its
    # script and records with the instance the test holds.
    assert got["shell"].calls is shell.calls and got["shell"]._ctx is got["ctx"]
    assert isinstance(got["log"], logging.LoggerAdapter)
    assert got["database"] == "db-conn"
    assert shell.calls == ["deployctl install 1.4"]
    assert result.steps["stage"].output == ["1.4", "registry-staging", "green"]


def test_runner_resources_are_known_names_when_the_runner_loads_the_path(write_runbook, runner):
    path = write_runbook("""
        from runbook import step

        @step
        def query(database):
            return database
    """)
    assert runner(resources={"database": "db-conn"}).run(path).steps["query"].output == "db-conn"


def test_step_output_reaches_the_next_step(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step

        @step
        def plan():
            return {"target": "green"}

        @step
        async def stage(plan):
            return {"color": plan["target"], "n": 1}

        @step
        def verify(stage, plan):
            return [stage, plan]
    """)
    )
    result = runner().run(rb)
    assert result.steps["verify"].output == [{"color": "green", "n": 1}, {"target": "green"}]


def test_generator_resource_is_torn_down_after_the_run(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import resource, step
        EVENTS = []

        @resource
        def conn():
            EVENTS.append("open")
            yield "conn"
            EVENTS.append("close")

        @step
        def use(conn):
            EVENTS.append("use " + conn)
    """)
    )
    runner().run(rb)
    assert rb.module.EVENTS == ["open", "use conn", "close"]


def test_a_resource_factory_that_returns_a_coroutine_fails_the_run_before_its_steps(
    write_runbook, runner
):
    rb = load(
        write_runbook("""
        from runbook import resource, step
        RAN = []

        async def connect():
            return "conn"

        @resource
        def conn():
            return connect()  # not awaited: a step would be handed the coroutine

        @step
        def use(conn):
            RAN.append(conn)
    """)
    )
    result = runner().run(rb)
    assert rb.module.RAN == []
    assert result.status == "failed"
    assert "resource 'conn' returned coroutine, not a value" in (result.error or "")


def test_a_sync_step_returning_a_coroutine_fails_saying_so(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step

        async def deploy():
            return 1

        @step
        def release():
            return deploy()
    """)
    )
    result = runner().run(rb)
    assert result.steps["release"].status == "failed"
    assert "returned a coroutine, not its result: make the step async def and await it" in (
        result.steps["release"].error or ""
    )


# -- when, skipping -----------------------------------------------------------------------------


def test_a_when_that_returns_an_awaitable_fails_the_step_and_never_runs_it(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step
        RAN = []

        async def ready():
            return False

        @step(when=lambda: ready())  # a coroutine: truthy, whatever ready() would say
        def switch():
            RAN.append("switch")
    """)
    )
    result = runner().run(rb)
    assert rb.module.RAN == []
    assert result.steps["switch"].status == "failed"
    assert "returned an awaitable (coroutine): it must return True or False" in (
        result.steps["switch"].error or ""
    )


def test_a_when_returning_none_or_a_value_decides_by_truth_as_if_would(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step

        @step(when=lambda: None)
        def never():
            return 1

        @step(when=lambda: {"changed": True})
        def changed():
            return 2
    """)
    )
    result = runner().run(rb)
    assert (result.steps["never"].status, result.steps["changed"].status) == (
        "skipped",
        "succeeded",
    )


def test_when_false_skips_with_reason_and_skips_data_dependents(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import param, step
        replicas = param("replicas", type=int, default=0)
        RAN = []

        @step(when=lambda params: params.replicas > 0)
        def scale(params):
            RAN.append("scale")
            return params.replicas

        @step
        def verify(scale):
            RAN.append("verify")

        @step
        def tolerant(scale=None):
            RAN.append(("tolerant", scale))
            return scale

        @step(after=["scale"])
        def announce():
            RAN.append("announce")
    """)
    )
    result = runner().run(rb)
    assert result.status == "succeeded"
    assert result.steps["scale"].status == "skipped" and result.steps["scale"].reason == "when"
    assert result.steps["verify"].status == "skipped"
    assert "scale" in result.steps["verify"].reason and "skipped" in result.steps["verify"].reason
    assert result.steps["tolerant"].status == "succeeded"
    assert result.steps["tolerant"].output is None  # got its default
    assert result.steps["announce"].status == "succeeded"  # after= a skipped step: done
    assert sorted(map(str, rb.module.RAN)) == ["('tolerant', None)", "announce"]
    assert kinds(result, "scale") == ["step_skipped"]

    result = runner(params={"replicas": 3}).run(rb)
    assert [result.steps[n].status for n in ("scale", "verify", "tolerant")] == ["succeeded"] * 3
    assert result.steps["tolerant"].output == 3


def test_when_receives_outputs_and_a_raising_when_fails_the_step(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step

        @step
        def live():
            return "blue"

        @step(when=lambda live: live == "green")
        def only_on_green():
            pass

        @step(when=lambda live: 1 / 0)
        def broken():
            pass
    """)
    )
    result = runner().run(rb)
    assert result.steps["only_on_green"].status == "skipped"
    assert result.steps["broken"].status == "failed"
    assert "when= raised ZeroDivisionError" in result.steps["broken"].error
    assert result.status == "failed"


# -- retries, backoff, timeouts -----------------------------------------------------------------


def test_retries_back_off_exponentially_with_jitter_capped_through_the_clock(
    write_runbook, runner, fake_clock
):
    rb = load(
        write_runbook("""
        from runbook import step
        CALLS = []

        @step(retries=5, backoff=2.0, backoff_max=5.0)
        def flaky():
            CALLS.append(1)
            if len(CALLS) < 5:
                raise ConnectionError(f"try {len(CALLS)}")
            return "up"
    """)
    )
    began = wall_clock()
    result = runner(clock=fake_clock).run(rb)
    assert wall_clock() - began < 1.0
    assert result.status == "succeeded"
    step = result.steps["flaky"]
    assert step.attempts == 5 and step.output == "up"
    assert len(fake_clock.sleeps) == 4
    for n, slept in enumerate(fake_clock.sleeps, start=1):
        d = min(5.0, 2.0 * 2 ** (n - 1))
        assert d / 2 <= slept <= d, f"retry {n}: slept {slept}, expected within [{d / 2}, {d}]"
    retried = [e for e in result.audit if e.kind == "step_retried"]
    assert [e.data["attempt"] for e in retried] == [1, 2, 3, 4]
    assert retried[0].data["error"] == "ConnectionError: try 1"


def test_jitter_varies_between_seeds(write_runbook, runner, fake_clock):
    source = """
        from runbook import step

        @step(retries=3, backoff=10.0)
        def down():
            raise RuntimeError("down")
    """
    rb = load(write_runbook(source))
    runner(clock=fake_clock, seed=1).run(rb)
    first = list(fake_clock.sleeps)
    fake_clock.sleeps.clear()
    runner(clock=fake_clock, seed=2).run(rb)
    assert first != fake_clock.sleeps and len(first) == 3


def test_long_backoff_and_timeout_take_no_wall_time(write_runbook, runner, fake_clock):
    rb = load(
        write_runbook("""
        from runbook import step

        @step(retries=2, backoff=600, timeout=300)
        def wait_for_quorum(clock):
            clock.sleep(3600)  # never comes back within the timeout
    """)
    )
    began = wall_clock()
    result = runner(clock=fake_clock).run(rb)
    wall = wall_clock() - began
    assert wall < 1.0
    step = result.steps["wait_for_quorum"]
    assert result.status == "failed" and step.attempts == 3
    assert step.error == "StepTimeout: step 'wait_for_quorum' timed out after 300s"
    # Three attempts cut at their 300 s deadline, and two backoffs capped at backoff_max=300 s.
    backoffs = [s for s in fake_clock.sleeps if s != 3600]
    assert len(backoffs) == 2 and all(150 <= s <= 300 for s in backoffs)
    assert fake_clock.elapsed == pytest.approx(3 * 300 + sum(backoffs))


def test_timeout_fires_for_an_async_step_waiting_on_the_clock(write_runbook, runner, fake_clock):
    rb = load(
        write_runbook("""
        from runbook import step

        @step(timeout=60)
        async def bake(clock):
            await clock.asleep(600)
    """)
    )
    result = runner(clock=fake_clock).run(rb)
    assert result.steps["bake"].status == "failed"
    assert "timed out after 60s" in result.steps["bake"].error
    assert fake_clock.elapsed == pytest.approx(60)


def test_timeout_fires_for_an_async_step_awaiting_anything(write_runbook, runner):
    rb = load(
        write_runbook("""
        import asyncio
        from runbook import step

        @step(timeout=0.05)
        async def hang():
            await asyncio.Event().wait()
    """)
    )
    result = runner().run(rb)
    assert result.steps["hang"].error == "StepTimeout: step 'hang' timed out after 0.05s"


def test_timeout_fires_for_a_real_blocking_sync_step(write_runbook, runner):
    rb = load(
        write_runbook("""
        import threading
        from runbook import step
        RELEASE = threading.Event()

        @step(timeout=0.2)
        def stuck():
            RELEASE.wait(10)
    """)
    )
    began = wall_clock()
    try:
        result = runner().run(rb)
    finally:
        rb.module.RELEASE.set()  # let the abandoned worker thread end
    wall = wall_clock() - began
    assert result.status == "failed"
    assert result.steps["stuck"].error == "StepTimeout: step 'stuck' timed out after 0.2s"
    assert 0.2 <= wall < 1.5


def test_step_timeout_is_a_timeout_error():
    assert issubclass(StepTimeout, TimeoutError)


# -- failures and rollback ----------------------------------------------------------------------


def test_optional_failure_does_not_fail_the_run_and_skips_its_dependents(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step

        @step(required=False)
        def warm_cache():
            raise RuntimeError("cache unreachable")

        @step
        def use_cache(warm_cache):
            pass

        @step
        def deploy():
            return "done"
    """)
    )
    result = runner().run(rb)
    assert result.status == "succeeded" and result.exit_code == 0
    assert result.steps["warm_cache"].status == "failed"
    assert result.steps["warm_cache"].error == "RuntimeError: cache unreachable"
    assert result.steps["use_cache"].status == "skipped"
    assert result.steps["use_cache"].reason == "warm_cache failed"
    assert result.steps["deploy"].output == "done"


CHAIN = """
    from runbook import rollback, step
    LOG = []

    @step(reversible=True)
    def s1():
        LOG.append("s1")
        return 1

    @rollback(s1)
    def undo_s1(s1):
        LOG.append(f"undo s1 ({s1})")

    @step
    def s2(s1):
        LOG.append("s2")
        return 2

    @step(reversible=True)
    def s3(s2):
        LOG.append("s3")
        return 3

    @rollback(s3)
    def undo_s3(s3):
        LOG.append("undo s3")
        if FAIL_UNDO_S3:
            raise RuntimeError("cannot undo s3")

    @step(reversible=True)
    def s4(s3):
        LOG.append("s4")
        raise RuntimeError("s4 broke half-way")

    @rollback(s4)
    def undo_s4(s4=None):
        LOG.append(f"undo s4 ({s4})")

    @step(reversible=True)
    def s5(s4):
        LOG.append("s5")

    @rollback(s5)
    def undo_s5():
        LOG.append("undo s5")

    FAIL_UNDO_S3 = False
"""


def test_failure_rolls_back_completed_reversible_steps_in_reverse_order(write_runbook, runner):
    rb = load(write_runbook(CHAIN))
    result = runner().run(rb)
    assert rb.module.LOG == ["s1", "s2", "s3", "s4", "undo s4 (None)", "undo s3", "undo s1 (1)"]
    assert result.status == "rolled_back" and result.exit_code == 1
    assert result.error == "s4: RuntimeError: s4 broke half-way"
    statuses = {n: s.status for n, s in result.steps.items()}
    assert statuses == {
        "s1": "rolled_back",
        "s2": "succeeded",
        "s3": "rolled_back",
        "s4": "failed",  # a failed step keeps "failed"; its own rollback's outcome is beside it
        "s5": "pending",
    }
    rollbacks = {n: s.rollback for n, s in result.steps.items()}
    assert rollbacks == {
        "s1": "rolled_back",
        "s2": None,
        "s3": "rolled_back",
        "s4": "rolled_back",
        "s5": None,
    }
    assert result.steps["s4"].error == "RuntimeError: s4 broke half-way"
    rollback_events = [(e.kind, e.step) for e in result.audit if e.kind.startswith("rollback")]
    assert rollback_events == [
        ("rollback_started", "s4"),
        ("rollback_succeeded", "s4"),
        ("rollback_started", "s3"),
        ("rollback_succeeded", "s3"),
        ("rollback_started", "s1"),
        ("rollback_succeeded", "s1"),
    ]


def test_failed_rollback_is_collected_and_the_others_still_run(write_runbook, runner):
    rb = load(write_runbook(CHAIN.replace("FAIL_UNDO_S3 = False", "FAIL_UNDO_S3 = True")))
    result = runner().run(rb)
    assert rb.module.LOG[-3:] == ["undo s4 (None)", "undo s3", "undo s1 (1)"]
    assert result.status == "rollback_failed" and result.exit_code == 4
    assert result.steps["s3"].status == "rollback_failed"
    assert result.steps["s3"].rollback_error == "RuntimeError: cannot undo s3"
    assert result.steps["s1"].status == "rolled_back"
    assert ("rollback_failed", "s3") in [(e.kind, e.step) for e in result.audit]


def test_reversible_step_without_rollback_is_not_undone_but_others_are(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import rollback, step
        LOG = []

        @step(reversible=True)
        def a():
            LOG.append("a")

        @rollback(a)
        def undo_a():
            LOG.append("undo a")

        @step(reversible=True)
        def b(a):
            LOG.append("b")

        @step
        def c(b):
            raise RuntimeError("no")
    """)
    )
    result = runner().run(rb)
    assert rb.module.LOG == ["a", "b", "undo a"]
    assert result.status == "rolled_back"
    assert result.steps["b"].status == "succeeded"


def test_failure_with_nothing_to_roll_back_is_failed(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step

        @step
        def a():
            raise ValueError("bad input")
    """)
    )
    result = runner().run(rb)
    assert result.status == "failed" and result.exit_code == 1
    assert result.error == "a: ValueError: bad input"
    failed = next(e for e in result.audit if e.kind == "step_failed")
    assert "Traceback" in failed.data["traceback"] and "bad input" in failed.data["traceback"]


def test_failure_stops_scheduling_new_steps(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step
        RAN = []

        @step
        def a():
            raise RuntimeError("stop")

        @step(after=["a"])
        def b():
            RAN.append("b")
    """)
    )
    result = runner().run(rb)
    assert rb.module.RAN == [] and result.steps["b"].status == "pending"


def test_non_json_output_fails_the_step_clearly(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step

        class Handle:
            pass

        @step
        def connect():
            return Handle()
    """)
    )
    result = runner().run(rb)
    assert result.status == "failed"
    error = result.steps["connect"].error
    assert "step 'connect' returned a Handle, which is not JSON-serialisable" in error
    assert "return dicts, lists" in error


# -- secrets --------------------------------------------------------------------------------------


def test_secret_param_value_appears_nowhere(write_runbook, runner, store_url):
    from runbook.store.memory import MemoryStore

    secret = "tok-7f3a9c1e55-secret"
    rb = load(
        write_runbook("""
        from runbook import param, rollback, step
        token = param("token", secret=True)

        @step(reversible=True)
        def login(params, ctx):
            ctx.record_change("registry", before=None, after=params.token)
            return {"header": "Bearer " + params.token, "raw": params.token}

        @rollback(login)
        def logout(login, params):
            raise RuntimeError("logout failed for " + params.token)

        @step
        def push(login, params):
            raise PermissionError(f"registry refused token {params.token}")
    """)
    )
    result = runner(params={"token": secret}).run(rb)
    assert result.status == "rollback_failed"
    texts = [
        result.error or "",
        *(s.error or "" for s in result.steps.values()),
        *(s.rollback_error or "" for s in result.steps.values()),
    ]
    assert any("***" in t for t in texts)
    assert all(secret not in t for t in texts)
    events = json.dumps([e.to_dict() for e in result.audit], default=str)
    assert secret not in events
    assert "Bearer ***" in events and '"token": "***"' in events
    store = MemoryStore.open(store_url)
    stored = json.dumps(
        [
            asdict(store.get_run(result.run_id)),
            *(asdict(s) for s in store.get_steps(result.run_id).values()),
        ],
        default=str,
    )
    assert secret not in stored and "***" in stored


# -- audit --------------------------------------------------------------------------------------


def test_record_change_emits_change_recorded_with_before_and_after(write_runbook, runner):
    rb = load(
        write_runbook("""
        from runbook import step

        @step
        def scale(ctx):
            ctx.record_change("web.replicas", before=2, after=6)
    """)
    )
    result = runner().run(rb)
    change = [e for e in result.audit if e.kind == "change_recorded"]
    assert len(change) == 1
    assert change[0].step == "scale"
    assert change[0].data == {"target": "web.replicas", "before": 2, "after": 6}


def test_run_result_fields(write_runbook, runner, fake_clock):
    rb = load(
        write_runbook("""
        from runbook import step

        @step
        def bake(clock):
            clock.sleep(5)
            return {"baked": True}
    """)
    )
    result = runner(clock=fake_clock, env="qa").run(rb)
    assert result.status == "succeeded" and result.ok and result.exit_code == 0
    assert result.run_id and result.env == "qa" and result.actor == "tester"
    assert result.runbook == str(rb.path)
    step = result.steps["bake"]
    assert (step.status, step.output, step.error, step.attempts) == (
        "succeeded",
        {"baked": True},
        None,
        1,
    )
    assert step.finished_at - step.started_at == fake_clock.now() - step.started_at
    assert step.duration == pytest.approx(5.0)
    assert kinds(result) == ["run_started", "step_started", "step_succeeded", "run_finished"]
    assert all(isinstance(e, AuditEvent) and e.run_id == result.run_id for e in result.audit)
    assert [e.seq for e in result.audit] == [1, 2, 3, 4]
    succeeded = result.audit[2]
    assert succeeded.data["output"] == {"baked": True} and succeeded.data["attempt"] == 1
    as_dict = result.to_dict()
    assert as_dict["exit_code"] == 0 and as_dict["steps"]["bake"]["output"] == {"baked": True}
    json.dumps(as_dict)


class BrokenSink:
    """An AuditSink that refuses events once ``fail_on`` (kind, step) was reached."""

    def __init__(self, fail_on: tuple[str, str], best_effort: bool = False) -> None:
        self.url = "broken://"
        self.best_effort = best_effort
        self.fail_on = fail_on
        self.inner = MemorySink()
        self.broken = False

    def append(self, event: AuditEvent) -> AuditEvent:
        if (event.kind, event.step) == self.fail_on:
            self.broken = True
        if self.broken:
            raise OSError("disk full")
        return self.inner.append(event)

    def events(self, query=None):
        return self.inner.events(query)

    def verify(self):
        return self.inner.verify()

    def close(self) -> None:
        pass


AUDITED = """
    from runbook import rollback, step
    RAN = []

    @step(reversible=True)
    def a():
        RAN.append("a")

    @rollback(a)
    def undo_a():
        RAN.append("undo a")

    @step
    def b(a):
        RAN.append("b")
"""


def test_failing_audit_sink_stops_the_run_before_the_next_step(write_runbook, runner):
    rb = load(write_runbook(AUDITED))
    sink = BrokenSink(("step_succeeded", "a"))
    result = runner(audit=[sink]).run(rb)
    assert "b" not in rb.module.RAN
    assert result.status in ("failed", "rolled_back") and result.exit_code == 1
    assert "audit sink broken:// failed: OSError: disk full" in result.error


def test_best_effort_audit_sink_failure_lets_the_run_succeed(write_runbook, runner, caplog):
    rb = load(write_runbook(AUDITED))
    sink = BrokenSink(("step_succeeded", "a"), best_effort=True)
    good = MemorySink()
    with caplog.at_level(logging.WARNING, logger="runbook"):
        result = runner(audit=[sink, good]).run(rb)
    assert result.status == "succeeded"
    assert rb.module.RAN == ["a", "b"]
    assert "broken://" in caplog.text and "disk full" in caplog.text
    assert [e.kind for e in good.events()][-1] == "run_finished"


# -- cancellation and concurrency of runs -------------------------------------------------------


def test_cancelling_arun_rolls_back_and_ends_cancelled(write_runbook, runner):
    rb = load(
        write_runbook("""
        import asyncio
        from runbook import rollback, step
        LOG = []
        STARTED = asyncio.Event()

        @step(reversible=True)
        def a():
            LOG.append("a")

        @rollback(a)
        def undo_a():
            LOG.append("undo a")

        @step
        async def wait_forever(a):
            STARTED.set()
            await asyncio.Event().wait()
    """)
    )

    async def main():
        task = asyncio.create_task(runner().arun(rb))
        await rb.module.STARTED.wait()
        task.cancel()
        return await task

    result = asyncio.run(main())
    assert result.status == "cancelled" and result.exit_code == 130
    assert rb.module.LOG == ["a", "undo a"]
    assert result.steps["wait_forever"].status == "cancelled"
    assert result.steps["a"].status == "rolled_back"
    assert "run_cancelled" in kinds(result)


def test_concurrent_runs_are_independent(write_runbook, runner):
    rb = load(
        write_runbook("""
        import asyncio
        from runbook import param, step
        who = param("who")

        @step
        async def greet(params):
            await asyncio.sleep(0)
            return "hello " + params.who
    """)
    )
    r = runner()
    results = r.run_many([(rb, {"who": "ann"}), (rb, {"who": "bob"}), (rb.path, {"who": "cy"})])
    assert [x.steps["greet"].output for x in results] == ["hello ann", "hello bob", "hello cy"]
    assert len({x.run_id for x in results}) == 3
    for x in results:
        assert {e.run_id for e in x.audit} == {x.run_id}

    async def both():
        return await asyncio.gather(
            r.arun(rb, params={"who": "dee"}), r.arun(rb, params={"who": "eve"})
        )

    dee, eve = asyncio.run(both())
    assert (dee.steps["greet"].output, eve.steps["greet"].output) == ("hello dee", "hello eve")
    assert dee.run_id != eve.run_id


def test_rollback_waits_for_a_cut_off_sync_step_to_stop(write_runbook, runner):
    rb = load(
        write_runbook("""
        import threading
        from runbook import rollback, step
        STARTED, RELEASE, DONE = threading.Event(), threading.Event(), threading.Event()
        SEEN = []

        @step(reversible=True)
        def stage():
            STARTED.set()
            RELEASE.wait(0.3)  # still working when the other branch fails
            DONE.set()

        @rollback(stage)
        def unstage():
            SEEN.append("stage finished before its rollback" if DONE.is_set() else "too early")
            RELEASE.set()

        @step
        def other():
            STARTED.wait(5)
            raise RuntimeError("other branch failed")
    """)
    )
    result = runner().run(rb)
    rb.module.RELEASE.set()
    assert result.status == "rolled_back"
    assert rb.module.SEEN == ["stage finished before its rollback"]


def test_timed_out_sync_step_is_not_undone_while_it_still_runs(write_runbook, runner):
    rb = load(
        write_runbook("""
        import threading
        from runbook import rollback, step
        RELEASE, DONE = threading.Event(), threading.Event()
        SEEN = []

        @step(reversible=True, timeout=0.1)
        def stage():
            RELEASE.wait(0.4)
            DONE.set()

        @rollback(stage)
        def unstage():
            SEEN.append(DONE.is_set())
            RELEASE.set()
    """)
    )
    try:
        result = runner().run(rb)
    finally:
        rb.module.RELEASE.set()
    assert result.steps["stage"].error == "StepTimeout: step 'stage' timed out after 0.1s"
    # Either wait for the thread before undoing, or do not undo and ask for a human.
    assert rb.module.SEEN in ([], [True])
