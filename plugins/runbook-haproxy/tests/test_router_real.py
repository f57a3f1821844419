"""HAProxyRouter against a real HAProxy: weights set, read back, and the traffic split they give."""

from __future__ import annotations

import pytest
from infra import HAProxy, split
from runbook_haproxy.router import HAProxyRouter
from runbook_haproxy.runtime import HAProxyError

from runbook.errors import UsageError
from runbook.plugins import Plugins

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_set_weights_reads_back_and_splits_traffic(haproxy: HAProxy, kind: str) -> None:
    url = haproxy.url if kind == "tcp" else haproxy.unix_url
    router = Plugins().open("router", url)
    assert isinstance(router, HAProxyRouter)
    assert router.weights("web") == {"stable": 100, "canary": 0}
    assert router.active("web") == "stable"

    router.set_weights("web", {"canary": 20, "stable": 80})

    assert router.weights("web") == {"stable": 80, "canary": 20}
    # What HAProxy itself reports, through its own command, not our parser of servers state.
    assert haproxy_weight(router, "canary") == 20
    if kind == "unix":
        return  # the split below is HAProxy's, whichever socket set the weights
    counts = split(haproxy.port, 1000)
    assert set(counts) == {"stable", "canary"}
    assert abs(counts["canary"] / 1000 - 0.20) <= 0.05, counts
    assert abs(counts["stable"] / 1000 - 0.80) <= 0.05, counts


def haproxy_weight(router: HAProxyRouter, server: str) -> int:
    answer = router.api.execute(f"get weight web/{server}")
    return int(answer.split()[0])


def test_switch_sends_everything_to_one_server(haproxy: HAProxy) -> None:
    router = HAProxyRouter(haproxy.url)
    router.switch("web", "canary")
    assert router.weights("web") == {"stable": 0, "canary": 100}
    assert router.active("web") == "canary"
    assert split(haproxy.port, 50) == {"canary": 50}


def test_unknown_server_or_backend_changes_nothing(haproxy: HAProxy) -> None:
    router = HAProxyRouter(haproxy.url)
    with pytest.raises(UsageError, match=r"has no server green \(servers: canary, stable\)"):
        router.set_weights("web", {"green": 50, "stable": 50})
    with pytest.raises(HAProxyError, match="backend 'api'"):
        router.set_weights("api", {"stable": 100})
    with pytest.raises(UsageError, match="must sum to 100"):
        router.set_weights("web", {"canary": 50, "stable": 60})
    assert router.weights("web") == {"stable": 100, "canary": 0}


def test_a_server_left_out_with_traffic_is_refused(haproxy: HAProxy) -> None:
    router = HAProxyRouter(haproxy.url)
    with pytest.raises(UsageError, match=r"also sends traffic to stable \(weight 100\)"):
        router.set_weights("web", {"canary": 100})
    router.set_weights("web", {"canary": 100, "stable": 0})
    router.set_weights("web", {"canary": 100})  # stable is at 0 now: leaving it out is fine
    assert router.weights("web") == {"stable": 0, "canary": 100}


def test_read_back_mismatch_fails(haproxy: HAProxy) -> None:
    """A second writer between the write and the read-back is caught, not reported as done."""
    real = HAProxyRouter(haproxy.url)

    class Racing:
        def __init__(self) -> None:
            self.sets = 0

        def execute(self, *commands: str) -> str:
            answer = real.api.execute(*commands)
            if commands[0].startswith("set server"):
                real.api.execute("set server web/canary weight 7")  # someone else's change
            return answer

    router = HAProxyRouter(haproxy.url, api=Racing())
    with pytest.raises(HAProxyError, match=r"read back as \{'stable': 50, 'canary': 7\}"):
        router.set_weights("web", {"canary": 50, "stable": 50})


def test_unreachable_haproxy_is_one_clear_error() -> None:
    from infra import free_port

    router = HAProxyRouter(f"haproxy://127.0.0.1:{free_port()}?timeout=1")
    with pytest.raises(HAProxyError, match=r"runtime API at 127\.0\.0\.1:\d+ unreachable"):
        router.weights("web")
