"""The identity options of decision commands: ``--sign KEY`` and the *claimed* actor."""

from __future__ import annotations

import os

import click

sign_option = click.option(
    "--sign",
    "sign",
    metavar="KEY",
    help="Sign the decision with this SSH key (a private key, or a .pub whose key is in "
    "ssh-agent); default $RUNBOOK_SIGNING_KEY. Required where the env has `signers`.",
)


def claimed_actor(as_: str | None) -> str | None:
    """The identity the user *claimed* (``--as``, ``RUNBOOK_ACTOR``), or None when none was.

    A signature proves who is deciding; only a claim the user made can disagree with it.
    """
    if as_ and as_.strip():
        return as_.strip()
    return os.environ.get("RUNBOOK_ACTOR", "").strip() or None
