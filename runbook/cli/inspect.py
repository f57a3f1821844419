"""Commands that look without running: ``list`` (collect only), ``graph`` and ``plugins``.

They import the runbook (which runs its module-level code, like pytest's ``--collect-only``) but
open no store, take no lock and call no step, so they are safe to point at a production runbook.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from runbook.cli.common import (
    config_option,
    handle_errors,
    json_document,
    load_config,
    store_option,
)
from runbook.cli.graphview import FORMATS, RENDERERS, approval_text
from runbook.cli.table import table
from runbook.collect import Runbook, StepDef, load
from runbook.errors import UsageError
from runbook.params import ParamSpec, describe_choices


def plugin_option(func: Any) -> Any:
    """`-P/--plugin MODULE`, shared by the commands that load plugins (exec, list, graph...)."""
    return click.option(
        "-P",
        "--plugin",
        "plugin_modules",
        multiple=True,
        metavar="MODULE",
        help="Load this plugin module too (repeatable), in addition to config `plugins`.",
    )(func)


def _plugins(config: Any, extra: Iterable[str], *, every_builtin: bool = False) -> Any:
    """The project's plugins; without ``every_builtin``, of the built-ins only those collection
    asks (the stores, audit and locks are not imported to list a runbook)."""
    from runbook.plugins import DEFAULT_PLUGINS, SETUP_PLUGINS, Plugins

    defaults = DEFAULT_PLUGINS if every_builtin else SETUP_PLUGINS
    return Plugins(extra=[*(getattr(config, "plugins", None) or ()), *extra], defaults=defaults)


def collect(path: Path, config_path: Path | None, plugin_modules: Iterable[str]) -> Runbook:
    """Load a runbook with the plugins its project configures (they may provide resources)."""
    if not path.is_file():
        raise UsageError(f"no such runbook file: {path}")
    config = load_config(path.resolve().parent, config_path)
    from runbook.fleet import Fleet

    fleet = Fleet.open(getattr(config, "inventory", None))  # rolling("group:web") needs it
    return load(path, plugins=_plugins(config, plugin_modules), fleet=fleet)


# -- describing steps and params -------------------------------------------------------------


def step_facts(step: StepDef) -> list[str]:
    """The short facts ``list`` and ``exec --dry-run`` show after a step's name."""
    o = step.options
    facts: list[str] = []
    if step.deps:
        facts.append("needs " + ", ".join(step.deps))
    if step.after:
        facts.append("after " + ", ".join(step.after))
    if o.when is not None:
        facts.append("when")
    if gate := approval_text(step):
        facts.append(gate)
    if o.lock:
        facts.append(f"lock {o.lock}")
    if step.rollback is not None:
        facts.append(f"rollback {step.rollback.func.__name__}")
    elif o.reversible:
        facts.append("reversible (no rollback!)")
    if o.retries:
        facts.append(f"retries {o.retries} (backoff {o.backoff:g}s)")
    if o.timeout:
        facts.append(f"timeout {o.timeout:g}s")
    if not o.required:
        facts.append("not required")
    if o.idempotent:
        facts.append("idempotent")
    if o.tags:
        facts.append("tags " + ", ".join(o.tags))
    return facts


def step_dict(step: StepDef, level: int) -> dict[str, Any]:
    o = step.options
    approval = None
    if o.approval is not None:
        approval = {
            "min": o.approval.min,
            "allow_self": o.approval.allow_self,
            "approvers": list(o.approval.approvers),
        }
    return {
        "name": step.name,
        "kind": step.kind,
        "level": level,
        "deps": list(step.deps),
        "after": list(step.after),
        "when": o.when is not None,
        "approval": approval,
        "lock": o.lock,
        "rollback": step.rollback.func.__name__ if step.rollback else None,
        "reversible": step.reversible,
        "retries": o.retries,
        "backoff": o.backoff,
        "timeout": o.timeout,
        "required": o.required,
        "idempotent": o.idempotent,
        "tags": list(o.tags),
        "group": step.group,
        "async": step.is_async,
        "file": o.file,
        "line": o.line,
        "doc": (step.func.__doc__ or "").strip().splitlines()[0] if step.func.__doc__ else "",
    }


def param_dict(spec: ParamSpec) -> dict[str, Any]:
    default: Any = None
    if not spec.required:
        default = "***" if spec.secret else spec.default
    choices = None
    if spec.choices is not None:
        choices = (
            describe_choices(spec.choices)
            if isinstance(spec.choices, range)
            else [c for c in spec.choices]  # type: ignore[attr-defined]
        )
    return {
        "name": spec.name,
        "type": spec.type_name,
        "required": spec.required,
        "default": default,
        "choices": choices,
        "secret": spec.secret,
        "env": spec.env,
        "help": spec.help,
    }


def step_levels(rb: Runbook) -> dict[str, int]:
    return {name: i + 1 for i, level in enumerate(rb.levels()) for name in level}


def runbook_dict(rb: Runbook) -> dict[str, Any]:
    levels = step_levels(rb)
    return {
        "runbook": str(rb.path),
        "name": rb.name,
        "doc": rb.doc,
        "sha256": rb.sha256,
        "lock": rb.lock,
        "params": [param_dict(p) for p in rb.params.values()],
        "resources": [
            {"name": r.name, "origin": r.origin, "line": r.line} for r in rb.resources.values()
        ],
        "levels": rb.levels(),
        "steps": [step_dict(s, levels[s.name]) for s in rb.steps.values()],
    }


def render_list(rb: Runbook) -> list[str]:
    title = rb.doc.splitlines()[0] if rb.doc else ""
    lines = [f"runbook {rb.path}" + (f": {title}" if title else "")]
    if rb.lock:
        lines.append(f"run lock: {rb.lock}")
    lines.append("")
    lines.append(f"params ({len(rb.params)}):")
    rows = []
    for spec in rb.params.values():
        d = param_dict(spec)
        default = "required" if spec.required else f"default {spec.describe_default()}"
        extra = []
        if d["choices"] is not None:
            shown = (
                d["choices"]
                if isinstance(d["choices"], str)
                else ", ".join(map(repr, d["choices"]))
            )
            extra.append(f"choices {shown}")
        if spec.secret:
            extra.append("secret")
        if spec.env:
            extra.append(f"${spec.env}")
        rows.append([spec.name, spec.type_name, default, " ".join(extra), spec.help])
    lines += table(rows, indent="  ") if rows else ["  (none)"]
    if rb.resources:
        lines.append("")
        lines.append(f"resources ({len(rb.resources)}):")
        lines += table(
            [[r.name, f"{r.origin}:{r.line}"] for r in rb.resources.values()], indent="  "
        )
    lines.append("")
    lines.append(f"steps ({len(rb.steps)}, in order):")
    levels = step_levels(rb)
    rows = [
        [f"{levels[s.name]}", s.name, s.kind, " · ".join(step_facts(s))] for s in rb.steps.values()
    ]
    lines += table(rows, indent="  ") if rows else ["  (none)"]
    return lines


# -- commands --------------------------------------------------------------------------------


@click.command("list")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@plugin_option
@config_option
@handle_errors
def list_cmd(
    path: Path, as_json: bool, plugin_modules: tuple[str, ...], config_path: Path | None
) -> None:
    """Collect a runbook without running it: params, resources, steps with gates and rollbacks."""
    rb = collect(path, config_path, plugin_modules)
    if as_json:
        click.echo(json_document("plan", runbook_dict(rb), default=repr))
        return
    for line in render_list(rb):
        click.echo(line)


@click.command("graph")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for a terminal, mermaid for Markdown, dot for Graphviz.",
)
@click.option(
    "--run",
    "run_id",
    metavar="RUN_ID",
    help="Show each step's (and each host's) state in this stored run of the runbook.",
)
@store_option
@plugin_option
@config_option
@handle_errors
def graph_cmd(
    path: Path,
    fmt: str,
    run_id: str | None,
    store_url: str | None,
    plugin_modules: tuple[str, ...],
    config_path: Path | None,
) -> None:
    """Draw the step DAG: parallel levels, data and ordering edges, gates, probes, rollbacks."""
    if run_id is None:
        rb = collect(path, config_path, plugin_modules)
        for line in RENDERERS[fmt](rb):
            click.echo(line)
        return
    from runbook.cli.building import build_runner
    from runbook.cli.retry import hosts_section
    from runbook.fleet import fleet_of

    if not path.is_file():
        raise UsageError(f"no such runbook file: {path}")
    config = load_config(path.resolve().parent, config_path)
    store = build_runner(config, store_url=store_url).store
    record = store.get_run(run_id)
    if Path(record.runbook_path).resolve() != path.resolve():
        raise UsageError(f"run {run_id} is a run of {record.runbook_path}, not of {path}")
    rb = load(path, plugins=_plugins(config, plugin_modules), fleet=fleet_of(record.options))
    steps = store.get_steps(run_id)
    lines = RENDERERS[fmt](rb, {name: s.status for name, s in steps.items()})
    if fmt == "text":
        lines = [*lines[:-2], *hosts_section(steps, record), *lines[-2:]]
    for line in lines:
        click.echo(line)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@plugin_option
@config_option
@handle_errors
def plugins_cmd(as_json: bool, plugin_modules: tuple[str, ...], config_path: Path | None) -> None:
    """List loaded plugins, where each comes from, and the hooks it implements."""
    config = load_config(None, config_path)
    infos = _plugins(config, plugin_modules, every_builtin=True).describe()
    if as_json:
        data = [{"name": i.name, "source": i.source, "hooks": list(i.hooks)} for i in infos]
        click.echo(json_document("plugins", {"plugins": data}))
        return
    rows = [
        [i.name, i.source, ", ".join(h.removeprefix("runbook_") for h in i.hooks)] for i in infos
    ]
    for line in table([["plugin", "source", "hooks"], *rows]):
        click.echo(line)


COMMANDS = [list_cmd, graph_cmd, plugins_cmd]
