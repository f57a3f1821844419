from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runbook.errors import PluginError
from runbook.notify.base import Message, TransientNotificationError
from runbook.notify.dispatch import NotificationService

from .conftest import RUN, FakePlugin, Sleeps, event

TOKEN = "T0KEN-SUPER-SECRET"


class Failures:
    def __init__(self) -> None:
        self.calls: list[tuple[Message, str, str]] = []

    def __call__(self, message: Message, url: str, error: str) -> None:
        self.calls.append((message, url, error))


def service(plugins, rules, sleeps=None, **kw):
    failures = Failures()
    svc = NotificationService(plugins, rules, on_failure=failures, sleep=sleeps or Sleeps(), **kw)
    return svc, failures


def test_delivers_to_every_matching_channel_in_order(plugins, fake: FakePlugin):
    svc, failures = service(plugins, [{"to": "fake://a"}, {"to": "fake://b", "env": ["dev"]}])

    async def main():
        await svc.start()
        svc.event(event("approval_requested", step="switch"), RUN)
        svc.event(event("step_started", step="switch"), RUN)  # not a default kind
        svc.event(event("run_finished", status="paused"), RUN)
        await svc.flush(5)
        await svc.aclose()

    asyncio.run(main())
    titles = [m.kind for m in fake.channel("fake://a").delivered]
    # The pause was announced by the gate's message: run_finished (paused) is not a second one.
    assert titles == ["approval_requested"]
    assert fake.channel("fake://b").delivered == []
    assert failures.calls == []
    assert fake.channel("fake://a").closed
    assert svc.sent == 1


def test_one_pause_is_one_message_per_channel(plugins, fake: FakePlugin):
    svc, failures = service(
        plugins,
        [{"to": "fake://all", "on": ["*"]}, {"to": "fake://runs", "on": ["run_paused"]}],
    )

    async def main():
        await svc.start()
        svc.event(event("approval_requested", step="switch"), RUN)
        svc.event(event("run_paused", awaiting=["switch"]), RUN)
        svc.event(event("run_finished", status="paused"), RUN)
        await svc.flush(5)
        await svc.aclose()

    asyncio.run(main())
    assert [m.kind for m in fake.channel("fake://all").delivered] == ["approval_requested"]
    # A channel that only routes run_paused still hears of the pause, once.
    assert [m.kind for m in fake.channel("fake://runs").delivered] == ["run_paused"]
    assert failures.calls == []


def test_two_gates_waiting_at_once_are_two_messages(plugins, fake: FakePlugin):
    svc, _ = service(plugins, [{"to": "fake://all", "on": ["*"]}])

    async def main():
        async with svc:
            svc.event(event("approval_requested", step="migrate"), RUN)
            svc.event(event("approval_requested", step="switch"), RUN)
            svc.event(event("run_paused"), RUN)
            svc.event(event("run_finished", status="paused"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    delivered = fake.channel("fake://all").delivered
    assert [(m.kind, m.step) for m in delivered] == [
        ("approval_requested", "migrate"),
        ("approval_requested", "switch"),
    ]


def test_channel_is_opened_once_per_url(plugins, fake: FakePlugin):
    svc, _ = service(plugins, [{"to": "fake://a"}])

    async def main():
        async with svc:
            for _ in range(5):
                svc.event(event("step_failed", step="s", error="e"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert fake.opens == ["fake://a"]
    assert len(fake.channel("fake://a").delivered) == 5


def test_transient_errors_are_retried_with_exponential_backoff(plugins, fake, sleeps):
    fake.scripts["fake://a"] = [
        TransientNotificationError("HTTP 500"),
        TransientNotificationError("HTTP 502"),
        TransientNotificationError("HTTP 503"),
    ]
    svc, failures = service(plugins, [{"to": "fake://a"}], sleeps, backoff=1.0, retries=4)

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert len(fake.channel("fake://a").attempts) == 4
    assert len(fake.channel("fake://a").delivered) == 1
    assert failures.calls == []
    # Equal jitter: between half and all of 1, 2, 4 seconds.
    for delay, base in zip(sleeps.delays, [1.0, 2.0, 4.0], strict=True):
        assert base / 2 <= delay <= base


def test_retry_after_is_honoured_and_capped(plugins, fake, sleeps):
    fake.scripts["fake://a"] = [
        TransientNotificationError("429", retry_after=7.0),
        TransientNotificationError("429", retry_after=3600.0),
    ]
    svc, _ = service(plugins, [{"to": "fake://a"}], sleeps, backoff=0.1, max_backoff=30.0)

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert sleeps.delays[0] == pytest.approx(7.0)
    assert sleeps.delays[1] == pytest.approx(30.0)


def test_gives_up_after_the_retry_limit_and_reports_once(plugins, fake, sleeps):
    fake.scripts["fake://a"] = [TransientNotificationError(f"HTTP 500 try {i}") for i in range(9)]
    svc, failures = service(plugins, [{"to": "fake://a"}], sleeps, retries=2)

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert len(fake.channel("fake://a").attempts) == 3
    assert len(sleeps.delays) == 2
    assert len(failures.calls) == 1
    message, url, error = failures.calls[0]
    assert message.kind == "step_failed" and url == "fake://a"
    assert error == "gave up after 3 attempt(s): HTTP 500 try 2"
    assert svc.failed == 1


def test_permanent_errors_are_not_retried(plugins, fake, sleeps):
    fake.scripts["fake://a"] = [ValueError("HTTP 404 no_service")]
    svc, failures = service(plugins, [{"to": "fake://a"}], sleeps)

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert len(fake.channel("fake://a").attempts) == 1
    assert sleeps.delays == []
    assert [c[2] for c in failures.calls] == ["ValueError: HTTP 404 no_service"]


def test_timeouts_are_transient(plugins, fake, sleeps):
    fake.scripts["fake://a"] = ["hang"]
    svc, failures = service(plugins, [{"to": "fake://a"}], sleeps, timeout=0.01)

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert len(fake.channel("fake://a").attempts) == 2
    assert len(fake.channel("fake://a").delivered) == 1
    assert failures.calls == []


def test_queue_is_bounded_and_overflow_is_reported(plugins, fake):
    fake.scripts["fake://a"] = ["hang"]
    svc, failures = service(plugins, [{"to": "fake://a"}], max_queue=3, timeout=60)

    async def main():
        async with svc:
            for i in range(5):
                svc.event(event("step_failed", step=f"s{i}"), RUN)
            assert [m.step for m, _, _ in failures.calls] == ["s3", "s4"]
            assert all("queue full" in error for _, _, error in failures.calls)
            await svc.flush(0.05)

    asyncio.run(main())
    # The hanging one and the two behind it are given up at the deadline, each reported once.
    assert sorted(m.step for m, _, _ in failures.calls) == ["s0", "s1", "s2", "s3", "s4"]


def test_flush_deadline_is_respected_when_a_channel_never_answers(plugins, fake):
    fake.scripts["fake://down"] = ["hang"] * 100
    svc, failures = service(plugins, [{"to": "fake://down"}, {"to": "fake://up"}], timeout=3600)

    async def main():
        await svc.start()
        for i in range(3):
            svc.event(event("step_failed", step=f"s{i}"), RUN)
        started = time.perf_counter()
        await svc.flush(0.1)
        elapsed = time.perf_counter() - started
        await svc.aclose()
        return elapsed

    elapsed = asyncio.run(main())
    assert elapsed < 2.0  # the deadline (0.1 s) plus scheduling slack, never the 1 h timeout
    assert len(fake.channel("fake://up").delivered) == 3  # a dead channel does not hold others
    down = [(m.step, e) for m, url, e in failures.calls if url == "fake://down"]
    assert [s for s, _ in down] == ["s0", "s1", "s2"]
    assert all("flush deadline of 0.1s" in e for _, e in down)
    assert len(failures.calls) == 3


def test_flush_reports_the_last_error_of_a_retrying_message(plugins, fake):
    fake.scripts["fake://a"] = [TransientNotificationError("HTTP 503")] * 10

    async def slow_sleep(seconds: float) -> None:
        await asyncio.sleep(3600)

    svc = NotificationService(
        plugins, [{"to": "fake://a"}], sleep=slow_sleep, on_failure=(failures := Failures())
    )

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(0.05)

    asyncio.run(main())
    assert len(failures.calls) == 1
    assert failures.calls[0][2].endswith("(last error: HTTP 503)")


def test_event_is_thread_safe_from_worker_threads(plugins, fake):
    svc, failures = service(plugins, [{"to": "fake://a", "on": ["*"]}])

    def worker(n: int) -> None:
        for i in range(50):
            svc.event(event("step_succeeded", step=f"w{n}-{i}"), RUN)

    async def main():
        await svc.start()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        await asyncio.gather(*(asyncio.to_thread(t.join) for t in threads))
        await svc.flush(5)
        await svc.aclose()

    asyncio.run(main())
    delivered = fake.channel("fake://a").delivered
    assert len(delivered) == 200
    assert len({m.step for m in delivered}) == 200
    for n in range(4):  # each producer's messages keep their order on the channel
        mine = [m.step for m in delivered if m.step.startswith(f"w{n}-")]
        assert mine == [f"w{n}-{i}" for i in range(50)]
    assert failures.calls == []


def test_events_before_start_are_delivered_after_it(plugins, fake):
    svc, _ = service(plugins, [{"to": "fake://a"}])
    svc.event(event("step_failed", step="early"), RUN)

    async def main():
        async with svc:
            await svc.flush(5)

    asyncio.run(main())
    assert [m.step for m in fake.channel("fake://a").delivered] == ["early"]


def test_notification_failed_never_loops(plugins, fake, sleeps):
    fake.scripts["fake://a"] = [ValueError("down")] * 50
    recorded: list[str] = []

    def on_failure(message: Message, url: str, error: str) -> None:
        # What the engine does: record notification_failed and hand it to every subscriber,
        # including this service, synchronously.
        recorded.append(error)
        svc.event(event("notification_failed", error=error), RUN)
        svc.event(event("step_failed", step="inside-callback"), RUN)

    svc = NotificationService(
        plugins, [{"to": "fake://a", "on": ["*"]}], sleep=sleeps, on_failure=on_failure
    )

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert len(recorded) == 1
    assert len(fake.channel("fake://a").attempts) == 1


def test_failure_callback_errors_do_not_escape(plugins, fake, sleeps):
    fake.scripts["fake://a"] = [ValueError("down")]

    def on_failure(*_):
        raise RuntimeError("audit sink down")

    svc = NotificationService(plugins, [{"to": "fake://a"}], sleep=sleeps, on_failure=on_failure)

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert svc.failed == 1


def test_secrets_of_the_url_never_reach_the_failure_report(plugins, fake, sleeps):
    url = f"fake://hooks.example.com/services/{TOKEN}?key=abcd1234"
    fake.scripts[url] = [ValueError(f"POST https://hooks.example.com/services/{TOKEN} said 403")]
    svc, failures = service(plugins, [{"to": url}], sleeps)

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    ((_, shown, error),) = failures.calls
    assert shown == "fake://hooks.example.com/***"
    assert TOKEN not in error and "403" in error


def test_configuration_mistakes_in_channels_are_found_before_the_run(plugins, fake):
    with pytest.raises(PluginError, match="no notifier plugin for nope://") as info:
        service(plugins, [{"to": "fake://a"}, {"to": "nope://x/secretpath"}])
    assert "notify: channel nope://x/***" in str(info.value)
    assert "secretpath" not in str(info.value)
    assert fake.opens == ["fake://a"]


def test_a_channel_that_fails_to_open_otherwise_is_reported_per_message(plugins, fake):
    def broken(url, **_):
        raise OSError(f"cannot read {url}")

    fake._open = broken  # type: ignore[method-assign]
    svc, failures = service(plugins, [{"to": "fake://x/secretpath"}])

    async def main():
        async with svc:
            svc.event(event("step_failed", step="s"), RUN)
            svc.event(event("step_failed", step="t"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    assert [m.step for m, _, _ in failures.calls] == ["s", "t"]
    ((_, shown, error), _) = failures.calls
    assert shown == "fake://x/***"
    assert error.startswith("cannot open channel: OSError: cannot read fake://x/***")


def test_adhoc_messages_are_routed(plugins, fake):
    svc, _ = service(plugins, [{"to": "fake://a", "env": ["prod"]}])

    async def main():
        async with svc:
            svc.adhoc(Message(title="db migrated", env="prod"))
            svc.adhoc(Message(title="not for prod", env="dev"))
            await svc.flush(5)

    asyncio.run(main())
    (message,) = fake.channel("fake://a").delivered
    assert message.title == "db migrated" and message.kind == "adhoc"


def test_aclose_reports_what_is_left(plugins, fake):
    fake.scripts["fake://a"] = ["hang"]
    svc, failures = service(plugins, [{"to": "fake://a"}], timeout=60)

    async def main():
        await svc.start()
        svc.event(event("step_failed", step="s"), RUN)
        await asyncio.sleep(0)
        await svc.aclose()
        svc.event(event("step_failed", step="after-close"), RUN)

    asyncio.run(main())
    assert [m.step for m, _, _ in failures.calls] == ["s", "after-close"]
    assert "closed" in failures.calls[0][2]
    assert fake.channel("fake://a").closed


def test_bad_settings_are_refused(plugins):
    with pytest.raises(ValueError):
        NotificationService(plugins, [], max_queue=0)


def test_adhoc_messages_get_the_run_context(plugins, fake):
    svc, _ = service(plugins, [{"to": "fake://a", "env": ["prod"]}])

    async def main():
        async with svc:
            svc.adhoc(Message(title="cache warmed", severity="info"), RUN)
            await svc.flush(5)

    asyncio.run(main())
    (message,) = fake.channel("fake://a").delivered
    assert (message.env, message.run_id, message.actor, message.runbook, message.kind) == (
        "prod",
        "01JRUN",
        "alice",
        "deploy",
        "adhoc",
    )


def test_before_start_the_buffer_is_bounded_too(plugins, fake):
    svc, failures = service(plugins, [{"to": "fake://a"}], max_queue=2)
    for i in range(3):
        svc.event(event("step_failed", step=f"s{i}"), RUN)
    assert [(m.step, "queue full" in e) for m, _, e in failures.calls] == [("s2", True)]

    async def main():
        async with svc:
            await svc.flush(5)

    asyncio.run(main())
    assert [m.step for m in fake.channel("fake://a").delivered] == ["s0", "s1"]


def test_a_dead_channel_given_up_at_the_flush_is_one_log_line_and_every_message_reported(
    plugins, fake, caplog: pytest.LogCaptureFixture
):
    fake.scripts["fake://down"] = ["hang"] * 100
    svc, failures = service(plugins, [{"to": "fake://down"}], timeout=3600)

    async def main():
        await svc.start()
        for i in range(5):
            svc.event(event("step_failed", step=f"s{i}"), RUN)
        await svc.flush(0.05)
        await svc.aclose()

    with caplog.at_level("WARNING", logger="runbook"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if "fake://down" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("5 notifications to fake://down failed: not delivered within")
    assert lines[0].endswith("and 2 more")
    assert sorted(m.step for m, _, _ in failures.calls) == ["s0", "s1", "s2", "s3", "s4"]


def test_the_given_up_line_names_one_message_in_the_singular() -> None:
    from runbook.notify.dispatch import given_up_line

    line = given_up_line(["r failed in prod"], "slack://***", "closed", "HTTP 503")
    assert (
        line
        == "1 notification to slack://*** failed: closed (last error: HTTP 503): 'r failed in prod'"
    )
