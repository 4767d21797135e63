"""How plan, deploy, status and destroy read to people: text tables and summaries.

Pure functions from topoc.deploy.engine's results (Plan, Change, ObjectStatus) to text; the
JSON forms are the objects' own to_json. No libvirt, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from topoc.deploy.engine import ADOPT, CREATE, RECREATE, REMOVE, UPDATE, Change, ObjectStatus, Plan

_MARKS = {CREATE: "+", UPDATE: "~", RECREATE: "!", REMOVE: "-", ADOPT: "&"}
_ACTIONS = (CREATE, ADOPT, UPDATE, RECREATE, REMOVE)


def private_host_note(uri: str) -> str:
    return (f"note: {uri} is libvirt's in-memory test driver, a private host that lives only "
            "for this command (`topoc deploy FILE --status` shows the result in the same run)")


def saved_test_host_note(uri: str, state_dir: object) -> str:
    return (f"note: {uri} is libvirt's in-memory test driver; topoc keeps its host between commands "
            f"in {state_dir}/test-host (`topoc reset-test-host` starts over)")


def _indent(text: str, prefix: str) -> str:
    return "".join(prefix + line for line in text.splitlines(keepends=True))


def render_change(change: Change, with_diff: bool = True) -> str:
    line = f"  {_MARKS.get(change.action, '=')} {change.action} {change.kind} {change.name}: {change.detail}\n"
    if with_diff and change.diff:
        line += _indent(change.diff, "      ")
        if not line.endswith("\n"):
            line += "\n"
    return line


def _counts(changes: Iterable[Change]) -> str:
    counted = Counter(c.action for c in changes)
    return ", ".join(f"{counted[a]} to {a}" for a in _ACTIONS if a != ADOPT or counted[a])


def render_plan(plan: Plan) -> str:
    where = f"lab {plan.lab} on {plan.uri}" + (f" (host {plan.host})" if plan.host else "")
    changes = plan.changes
    if not changes:
        text = f"{where}: in sync, nothing to change ({len(plan.in_sync)} objects)\n"
    else:
        text = f"plan for {where}:\n" + "".join(render_change(c) for c in changes)
        if plan.in_sync:
            text += f"  = {len(plan.in_sync)} object(s) already in sync\n"
        text += _counts(changes) + "\n"
    return text + "".join(f"{note}\n" for note in plan.notes)


def render_applied(plan: Plan) -> str:
    where = f"lab {plan.lab} on {plan.uri}"
    if not plan.changes:
        return f"{where}: in sync, nothing changed\n"
    lines = "".join(render_change(c, with_diff=False) for c in plan.changes)
    counted = Counter(c.action for c in plan.changes)
    done = ", ".join(f"{counted[a]} {a}{'e' if not a.endswith('e') else ''}d" for a in _ACTIONS if counted[a])
    return f"deployed {where}:\n{lines}{done}\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _leases(row: ObjectStatus) -> str:
    if row.kind != "network":
        return ""
    if row.leases is None:
        return "leases: not reported by this driver"
    return "leases: " + ("; ".join(row.leases) if row.leases else "none")


def render_status(lab: str, uri: str, rows: list[ObjectStatus]) -> str:
    header = ("KIND", "NAME", "DEFINED", "ACTIVE", "AUTOSTART", "BRIDGE", "DETAIL")
    table = [header]
    for row in rows:
        detail = "; ".join(part for part in (_leases(row) if row.defined else "", row.note) if part)
        table.append((row.kind, row.name, _yes(row.defined), _yes(row.active), _yes(row.autostart),
                      row.bridge or "-", detail))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in table]
    return f"lab {lab} on {uri}:\n" + "".join(line.rstrip() + "\n" for line in lines)


def render_destroyed(lab: str, uri: str, removed: list[Change], left_alone: list[str]) -> str:
    if removed:
        text = f"destroyed lab {lab} on {uri}:\n" + "".join(
            f"  - removed {c.kind} {c.name} ({c.detail})\n" for c in removed)
    else:
        text = f"lab {lab} owns nothing on {uri}: nothing to destroy\n"
    return text + "".join(f"  left alone: {why}\n" for why in left_alone)
