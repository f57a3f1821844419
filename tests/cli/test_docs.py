"""docs/cli.md stays true: every command and option is documented, every section is real."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest

from runbook.cli import cli
from runbook.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_ROLLBACK_FAILED,
    EXIT_USAGE,
)

from .helpers import REPO

DOC = (REPO / "docs" / "cli.md").read_text()


def commands(
    group: click.Group = cli, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield " ".join(path), command
        if isinstance(command, click.Group):
            yield from commands(command, path)


def sections() -> dict[str, str]:
    """``## runbook <command>`` headings and the text under each."""
    parts = re.split(r"^## ", DOC, flags=re.M)[1:]
    return {p.splitlines()[0].strip(): p for p in parts}


ALL = list(commands())


def test_the_walk_finds_the_commands_this_issue_owns():
    names = {name for name, _ in ALL}
    assert {
        "exec",
        "list",
        "graph",
        "plugins",
        "runs",
        "show",
        "approve",
        "deny",
        "resume",
        "cancel",
    } <= names


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_every_command_has_a_section_naming_each_option(name, command):
    section = sections().get(f"runbook {name}")
    if (
        section is None
        and isinstance(command, click.Group)
        and not any(isinstance(p, click.Option) for p in command.params)
    ):
        return  # a bare group (``notify``) is documented through its subcommands
    assert section is not None, f"docs/cli.md has no '## runbook {name}' section"
    for param in command.params:
        if isinstance(param, click.Option):
            for flag in param.opts + param.secondary_opts:
                assert f"`{flag}" in section, f"{flag} of `runbook {name}` is not documented"
        elif param.name:
            assert param.name.upper() in section, f"argument {param.name} of {name}"


def test_every_section_names_a_real_command():
    real = {f"runbook {name}" for name, _ in ALL}
    for title in sections():
        if title.startswith("runbook "):
            assert title in real, f"docs/cli.md documents {title!r}, which does not exist"
        else:
            assert title in {"Exit codes", "JSON output", "Startup", "Examples"}, (
                f"unexpected section {title!r}"
            )


def test_exit_code_table_matches_the_code():
    table = sections()["Exit codes"]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert codes == {
        EXIT_OK,
        EXIT_FAILED,
        EXIT_USAGE,
        EXIT_PAUSED,
        EXIT_ROLLBACK_FAILED,
        EXIT_LOCKED,
        EXIT_INTERRUPTED,
    }


def test_examples_use_real_commands_and_options():
    real = {name for name, _ in ALL}
    typed = re.findall(r"^\$ (runbook [^\n]+)", DOC, flags=re.M)
    typed += re.findall(r"^(runbook [^\n]+)", sections()["Examples"], flags=re.M)
    assert len(typed) > 10
    for line in typed:
        words = line.removeprefix("$ ").split()
        name = words[1] if words[1] in real else None
        assert name, f"example names an unknown command: {line}"
        if len(words) > 2 and f"{words[1]} {words[2]}" in real:
            name = f"{words[1]} {words[2]}"
        command = dict(ALL)[name]
        flags = {
            f
            for p in command.params
            if isinstance(p, click.Option)
            for f in p.opts + p.secondary_opts
        }
        for word in words[2:]:
            flag = word.strip("[]|").split("=")[0]
            if flag.startswith("-") and flag not in ("-", "--"):
                assert flag in flags, f"{flag} is not an option of `runbook {name}`: {line}"
