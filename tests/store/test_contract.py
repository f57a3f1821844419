"""Every built-in run store passes the same contract (runbook.testing.store_contract)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from runbook.plugins import Plugins
from runbook.store.base import RunStore
from runbook.testing.store_contract import CHECKS, StoreOpener

STORE_PLUGINS = ("runbook.store.memory", "runbook.store.sqlite")


@pytest.fixture(params=["memory", "sqlite"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Opens handles on one fresh store, through the plugin registry as the runner does."""
    if request.param == "memory":
        url = f"memory://contract-{uuid.uuid4().hex}"
    else:
        url = f"sqlite:///{tmp_path}/.runbook/runbook.db"
    plugins = Plugins(entry_points=False, defaults=STORE_PLUGINS)
    return lambda: plugins.open("store", url)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_contract(check: Callable[[StoreOpener], None], open_store: StoreOpener) -> None:
    check(open_store)


def test_stores_satisfy_the_protocol(open_store: StoreOpener) -> None:
    store = open_store()
    try:
        assert isinstance(store, RunStore)
    finally:
        store.close()
