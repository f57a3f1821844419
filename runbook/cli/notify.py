"""``runbook notify test URL``: prove a channel works before a failing deploy needs it to."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from runbook.cli.common import config_option, fail, handle_errors, load_config
from runbook.errors import EXIT_FAILED, ConfigError, UsageError, leaves
from runbook.notify.base import Message
from runbook.notify.rules import Rules
from runbook.notify.urls import scrub
from runbook.urls import redact_url

TEST_TIMEOUT = 15.0


def _config_value(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def _channel_options(url: str, config_path: Path | None) -> tuple[dict[str, Any], list[Any]]:
    """Options the configuration gives this channel, and its extra plugins."""
    if config_path is None:
        return {}, []
    config = load_config(config_path.parent, config_path)
    rules = Rules.parse(_config_value(config, "notify") or [])
    return dict(rules.options(url)), list(_config_value(config, "plugins") or [])


def sample_message(url: str) -> Message:
    return Message(
        title="runbook test notification",
        text="If you can read this, runbook can reach this channel.",
        severity="info",
        kind="test",
        run_id="test",
        runbook="notify-test",
        env="test",
        actor=getpass.getuser(),
        command=f"runbook notify test {redact_url(url)}",
    )


async def _send(url: str, options: dict[str, Any], plugins: list[Any]) -> None:
    from runbook.plugins import Plugins

    notifier = Plugins(extra=plugins).open("notifier", url, **options)
    try:
        await asyncio.wait_for(notifier.send(sample_message(url)), TEST_TIMEOUT)
    finally:
        await notifier.aclose()


@click.group()
def notify() -> None:
    """Notification channels."""


@notify.command("test")
@click.argument("url")
@config_option
@handle_errors
def test(url: str, config_path: Path | None) -> None:
    """Send a sample message through the channel at URL now (one attempt, no retries).

    With --config, the options of the rule that names this URL (a webhook's secret_env, say) are
    used. Exits 1 when the channel does not take the message.
    """
    if "://" not in url:
        raise ConfigError(f"{url!r} is not a channel URL (expected scheme://...)")
    options, plugins = _channel_options(url, config_path)
    shown = redact_url(url)
    try:
        asyncio.run(_send(url, options, plugins))
    except UsageError:  # no plugin for the scheme, a bad URL or option: exit 2
        raise
    except Exception as raised:
        exc = leaves(raised)[0]  # not "unhandled errors in a TaskGroup"
        if isinstance(exc, UsageError):
            raise exc from None
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) and not str(exc):
            detail = f"no answer within {TEST_TIMEOUT:g}s"
        fail(f"could not send to {shown}: {scrub(detail, url)}", EXIT_FAILED)
    click.echo(f"sent to {shown}")


COMMANDS = [notify]
