"""A verify run's report, and its text and JSON: what was predicted (topoc.model.reach)
against what was observed, shared by `topoc verify` (network namespaces,
topoc.verify.netns) and `topoc verify --live` (running guests, topoc.verify.live).

A lab with IPv6 is reported family by family: one matrix per family under its title
("IPv4", "IPv6"), and a `family` on every JSON pair. An IPv4-only lab's observations
carry no family, and its text and JSON are what they were before IPv6."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from ipaddress import ip_address

from topoc.model.analysis import Analysis, analysis_of
from topoc.model.family import Family
from topoc.model.ir import Forward, Lab


def address_order(address: str) -> tuple[int, int]:
    """Addresses in the order probes send to them: IPv4 first, then IPv6, each numeric."""
    ip = ip_address(address)
    return ip.version, int(ip)


class VerifyError(Exception):
    """Verify cannot run (not root, a tool missing, a command failed, a guest not ready)."""


@dataclass(frozen=True)
class Observation:
    src: str
    dst: str
    predicted: bool
    observed: bool
    addresses: tuple[str, ...]  # the destination addresses pinged
    failed: tuple[str, ...]  # those that did not answer, or not from the destination
    # (address, who answered instead): an address the destination shares with the source
    # itself or with another node, whose echo reply came from that one.
    answered_by: tuple[tuple[str, str], ...] = ()
    # The family of `addresses`, compared with reach's matrix of that family; None in an
    # IPv4-only lab's report (every address of the destination, as before IPv6).
    family: Family | None = None

    @property
    def agrees(self) -> bool:
        return self.predicted == self.observed


@dataclass(frozen=True)
class ForwardObservation:
    forward: Forward
    src: str
    target: str  # host address:port the source connected to ([address]:port in IPv6)
    predicted: bool
    observed: bool
    family: Family | None = None  # as Observation's: None in an IPv4-only lab's report

    @property
    def agrees(self) -> bool:
        return self.predicted == self.observed


@dataclass
class Report:
    lab: str
    pairs: list[Observation]
    forwards: list[ForwardObservation]
    notes: list[str] = field(default_factory=list)
    # What the run could not probe (`verify --live`: pairs from a host or an external
    # node, which have no guest agent), shown as such, never counted as agreeing.
    not_probed: list[tuple[str, str]] = field(default_factory=list)
    forwards_not_probed: list[tuple[Forward, str]] = field(default_factory=list)
    where: str = "on a real kernel"

    @property
    def mismatches(self) -> int:
        return sum(not p.agrees for p in self.pairs) + sum(not f.agrees for f in self.forwards)

    @property
    def families(self) -> tuple[Family, ...]:
        """The families the pairs were observed in, in report order; () when they carry
        none (an IPv4-only lab)."""
        return tuple(dict.fromkeys(o.family for o in self.pairs if o.family is not None))


# The same marks as `topoc reach`'s matrix for what happened; `!` flags a disagreement.
AGREE_YES, AGREE_NO, MISSING, UNEXPECTED, ITSELF = "✓", "✗", "✗!", "✓!", "·"
NOT_PROBED = "?"


def _cell(observation: Observation | None, probed: bool = True) -> str:
    if observation is None:
        return ITSELF if probed else NOT_PROBED
    if observation.agrees:
        return AGREE_YES if observation.observed else AGREE_NO
    return MISSING if observation.predicted else UNEXPECTED


def _failed_text(o: Observation) -> str:
    instead = dict(o.answered_by)
    silent = [a for a in o.failed if a not in instead]
    parts = [f"no answer from {', '.join(silent)}"] if silent else []
    parts += [f"{a} answered by {node}" + (" itself" if node == o.src else "")
              for a, node in o.answered_by]
    return f" ({'; '.join(parts)})" if parts else ""


def _matrix_lines(pairs: list[Observation], names: list[str], unprobed: set[tuple[str, str]]
                  ) -> list[str]:
    by_pair = {(o.src, o.dst): o for o in pairs}
    width = max(len(n) for n in names) if names else 4
    lines = [" " * (width + 4) + " ".join(f"{i:>2}" for i in range(len(names)))]
    for i, src in enumerate(names):
        cells = " ".join(f"{_cell(by_pair.get((src, dst)), (src, dst) not in unprobed):>2}"
                         for dst in names)
        cells = cells.rstrip()
        lines.append(f"{i:>2} {src:<{width}} {cells}")
    return lines


def _explain(an: Analysis, o: Observation) -> str:
    """reach's hop-by-hop account of the pair: of every address of the destination, or
    of the observation's family's alone."""
    from topoc.model.reach import explain, explain_probe, pair

    if o.family is None:
        return explain(an, o.src, o.dst)
    result, probes = pair(an, o.src, o.dst, o.family)
    lines = [f"{o.src} -> {o.dst} ({o.family.title}): "
             f"{'reachable' if result.reachable else 'unreachable'}"]
    if not probes:
        lines.append(f"  why: {result.reason}")
    lines += [explain_probe(p) for p in probes]
    return "\n".join(lines) + "\n"


def render_text(report: Report, subject: Lab | Analysis) -> str:
    an = analysis_of(subject)
    lab = an.lab
    names = [node.name for node in lab.nodes]
    unprobed = set(report.not_probed)
    lines = [f"verify {report.lab}: predicted against observed {report.where}", ""]
    families = report.families
    if families:
        # One matrix per family, each under its title.
        for family in families:
            lines.append(f"{family.title}:")
            lines += _matrix_lines([o for o in report.pairs if o.family is family], names, unprobed)
            lines.append("")
    else:
        lines += _matrix_lines(report.pairs, names, unprobed)
        lines.append("")
    lines.append("  ".join(f"{i}={n}" for i, n in enumerate(names)))
    lines.append(f"rows are sources, columns destinations (every address of each"
                 f"{' in that family' if families else ''}).  "
                 f"{AGREE_YES} reached, as predicted   {AGREE_NO} did not, as predicted   "
                 f"{MISSING} predicted to reach but did not   {UNEXPECTED} reached against the prediction   "
                 f"{ITSELF} itself" + (f"   {NOT_PROBED} not probed" if unprobed else ""))
    for f in report.forwards:
        mark = "ok" if f.agrees else "MISMATCH"
        lines.append(f"forward {f.forward.protocol} {f.forward.port} -> {f.forward.vm}:{f.forward.vm_port} "
                     f"from {f.src} via {f.target}: predicted {'open' if f.predicted else 'closed'}, "
                     f"observed {'open' if f.observed else 'closed'}  [{mark}]")
    for forward, src in report.forwards_not_probed:
        lines.append(f"forward {forward.protocol} {forward.port} -> {forward.vm}:{forward.vm_port} "
                     f"from {src}: not probed")
    mismatched = [o for o in report.pairs if not o.agrees]
    for o in mismatched:
        lines.append("")
        lines.append(f"mismatch{f' ({o.family.title})' if o.family is not None else ''}: "
                     f"{o.src} -> {o.dst}: predicted "
                     f"{'reachable' if o.predicted else 'unreachable'}, observed "
                     f"{'reachable' if o.observed else 'unreachable'}"
                     + _failed_text(o))
        lines.append(textwrap.indent(_explain(an, o).rstrip(), "    "))
    lines.append("")
    for note in report.notes:
        lines.append(f"note: {note}")
    total = len(report.pairs) + len(report.forwards)
    lines.append(f"{total - report.mismatches} of {total} checks agree; "
                 f"{report.mismatches} mismatch{'es' if report.mismatches != 1 else ''}")
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> dict:
    return {
        "pairs": [{"src": o.src, "dst": o.dst,
                   **({"family": o.family.title} if o.family is not None else {}),
                   "predicted": o.predicted, "observed": o.observed,
                   **({"answered_by": dict(o.answered_by)} if o.answered_by else {})}
                  for o in report.pairs],
        "forwards": [{"protocol": f.forward.protocol, "port": f.forward.port, "vm": f.forward.vm,
                      "vm_port": f.forward.vm_port, "src": f.src,
                      **({"family": f.family.title} if f.family is not None else {}),
                      "predicted": f.predicted, "observed": f.observed} for f in report.forwards],
        "mismatches": report.mismatches,
        **({"not_probed": {
            "pairs": [{"src": src, "dst": dst} for src, dst in report.not_probed],
            "forwards": [{"protocol": f.protocol, "port": f.port, "vm": f.vm, "vm_port": f.vm_port,
                          "src": src} for f, src in report.forwards_not_probed],
        }} if report.not_probed or report.forwards_not_probed else {}),
    }
