"""``runbook graph``'s drawings of the step DAG: text for a terminal, Mermaid, Graphviz dot.

Pure functions of a collected runbook (and, with ``--run``, each step's stored state), so each
format is tested without a terminal or a store.
"""

from __future__ import annotations

from runbook.collect import Runbook, StepDef

FORMATS = ("text", "mermaid", "dot")
NL, BACKSLASH_N = "\n", "\\n"


def approval_text(step: StepDef) -> str | None:
    """A gate's rules in a few words (``approval (min 2; not self)``), for lists and graphs."""
    approval = step.options.approval
    if approval is None:
        return None
    parts = []
    if approval.min > 1:
        parts.append(f"min {approval.min}")
    if not approval.allow_self:
        parts.append("not self")
    if approval.approvers:
        parts.append("by " + ", ".join(approval.approvers))
    return "approval" + (f" ({'; '.join(parts)})" if parts else "")


def _edges(rb: Runbook) -> list[tuple[str, str, str]]:
    """(from, to, kind) with kind ``data`` or ``after``, in step order."""
    out = []
    for step in rb.steps.values():
        out += [(dep, step.name, "data") for dep in step.deps]
        out += [(dep, step.name, "after") for dep in step.after]
    return out


# ``graph --run``: each step's state in a stored run, after its name.
MARKS = {"succeeded": "✓", "failed": "✗", "rolled_back": "↺", "rollback_failed": "‼",
         "skipped": "↷", "awaiting_approval": "⏸", "running": "▶", "cancelled": "⊘"}  # fmt: skip


def _state(name: str, states: dict[str, str] | None, sep: str = " ") -> str:
    if states is None:
        return ""
    status = states.get(name, "pending")
    return f"{sep}{MARKS.get(status, '·')} {status}" if sep == " " else f"{sep}{status}"


def _node_text(step: StepDef, states: dict[str, str] | None = None) -> str:
    text = step.name + _state(step.name, states)
    if step.kind == "probe":
        return f"({text})"
    if step.options.approval is not None:
        return f"<{text}>"
    return f"[{text}]"


def render_text(rb: Runbook, states: dict[str, str] | None = None) -> list[str]:
    levels = rb.levels()
    lines = [f"{rb.name}: {len(rb.steps)} steps in {len(levels)} levels"]
    for i, level in enumerate(levels, 1):
        if i > 1:
            lines.append("   │")
            lines.append("   ▼")
        nodes = "  ".join(_node_text(rb.steps[n], states) for n in level)
        lines.append(f"{i:>2} {nodes}")
    edges = _edges(rb)
    rollbacks = [(s.name, s.rollback.func.__name__) for s in rb.steps.values() if s.rollback]
    if edges or rollbacks:
        lines.append("")
        lines.append("edges:")
        width = max((len(a) for a, _, _ in edges), default=0)
        for a, b, kind in edges:
            arrow = "──▶" if kind == "data" else "┄┄▶"
            lines.append(
                f"  {a.ljust(width)} {arrow} {b}" + ("  (after)" if kind == "after" else "")
            )
        for name, undo in rollbacks:
            lines.append(f"  {name.ljust(width)} ↺   {undo}  (rollback)")
    locks = [(s.name, s.options.lock) for s in rb.steps.values() if s.options.lock]
    if rb.lock or locks:
        lines.append("")
        lines.append(
            "locks: "
            + ", ".join(
                ([f"run: {rb.lock}"] if rb.lock else []) + [f"{n}: {lk}" for n, lk in locks]
            )
        )
    lines.append("")
    lines.append("legend: [step]  (probe)  <approval gate>  ──▶ data  ┄┄▶ after  ↺ rollback")
    return lines


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _label(step: StepDef, newline: str, states: dict[str, str] | None = None) -> str:
    parts = [step.name + _state(step.name, states, newline)]
    if step.options.approval is not None:
        parts.append(approval_text(step) or "approval")
    if step.options.lock:
        parts.append(f"lock {step.options.lock}")
    return newline.join(parts)


def render_mermaid(rb: Runbook, states: dict[str, str] | None = None) -> list[str]:
    ids = {name: f"s{i}" for i, name in enumerate(rb.steps)}
    lines = ["flowchart TD"]
    for name, step in rb.steps.items():
        text = _label(step, "<br/>", states).replace('"', "#quot;")
        if step.kind == "probe":
            shape = f'(["{text}"])'  # stadium: read-only
        elif step.options.approval is not None:
            shape = f'{{{{"{text}"}}}}'  # hexagon: a human gate
        else:
            shape = f'["{text}"]'
        lines.append(f"    {ids[name]}{shape}")
        css = (
            "probe"
            if step.kind == "probe"
            else ("gate" if step.options.approval is not None else "step")
        )
        lines.append(f"    class {ids[name]} {css}")
    for a, b, kind in _edges(rb):
        lines.append(f"    {ids[a]} {'-->' if kind == 'data' else '==>|after|'} {ids[b]}")
    for i, (name, step) in enumerate((n, s) for n, s in rb.steps.items() if s.rollback):
        rid = f"r{i}"
        undo = step.rollback.func.__name__ if step.rollback else ""
        lines.append(f'    {rid}[/"↺ {undo}"/]')
        lines.append(f"    class {rid} rollback")
        lines.append(f"    {ids[name]} -.->|rollback| {rid}")
    lines += [
        "    classDef step fill:#eef4ff,stroke:#4a6fa5",
        "    classDef probe fill:#f0fff0,stroke:#4a9a4a,stroke-dasharray:2 2",
        "    classDef gate fill:#fff4e0,stroke:#d08000,stroke-width:2px",
        "    classDef rollback fill:#fff0f0,stroke:#b04040,stroke-dasharray:5 5",
    ]
    return lines


def render_dot(rb: Runbook, states: dict[str, str] | None = None) -> list[str]:
    lines = [
        f'digraph "{_quote(rb.name)}" {{',
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fillcolor="#eef4ff", fontname="Helvetica"];',
    ]
    for name, step in rb.steps.items():
        attrs = [f'label="{_quote(_label(step, NL, states)).replace(NL, BACKSLASH_N)}"']
        if step.kind == "probe":
            attrs += ["shape=ellipse", 'style="dashed,filled"', 'fillcolor="#f0fff0"']
        elif step.options.approval is not None:
            attrs += ["shape=hexagon", 'fillcolor="#fff4e0"', "penwidth=2"]
        lines.append(f'    "{_quote(name)}" [{", ".join(attrs)}];')
    for level in rb.levels():
        if len(level) > 1:
            lines.append("    { rank=same; " + " ".join(f'"{_quote(n)}";' for n in level) + " }")
    for a, b, kind in _edges(rb):
        style = "" if kind == "data" else ' [style=bold, label="after"]'
        lines.append(f'    "{_quote(a)}" -> "{_quote(b)}"{style};')
    for name, step in rb.steps.items():
        if step.rollback:
            node = f"rollback:{step.rollback.func.__name__}"
            lines.append(
                f'    "{_quote(node)}" [label="↺ {_quote(step.rollback.func.__name__)}", '
                'shape=note, style="dashed,filled", fillcolor="#fff0f0"];'
            )
            lines.append(
                f'    "{_quote(name)}" -> "{_quote(node)}" '
                '[style=dashed, arrowhead=empty, label="rollback"];'
            )
    lines.append("}")
    return lines


RENDERERS = {"text": render_text, "mermaid": render_mermaid, "dot": render_dot}
