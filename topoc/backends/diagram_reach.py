"""The `--reach` overlay: topoc.model.reach's prediction, summarised for the diagram.

Two summaries, both computed by the reachability engine (topoc.model.reach), never here:
- on each managed network's uplink: whether its machines reach the LAN's machines
  (out) and whether the LAN's machines reach them (in): NAT shows out but not in, a
  routed network without a route back shows neither, bridged shows both. "The LAN" is
  the machines on external networks; pairs of machines that share a network are left
  out, since they meet there without crossing the host.
- a who-reaches-whom table of every host, VM and external machine.

Both grow with the square of the lab, so the overlay is drawn only for labs of up to
MAX_NODES nodes, and the table (a row and a column per node) only up to TABLE_MAX_NODES,
past which it stops being readable (`topoc reach` prints the whole matrix); the scene
says what it left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from topoc.model.analysis import Analysis, analysis_of
from topoc.model.family import IPV4, IPV6, Family, IPAddress
from topoc.model.ir import External, Lab, Nic, Vm

MAX_NODES = 40
TABLE_MAX_NODES = 16


@dataclass(frozen=True, slots=True)
class Share:
    """How many of the machine -> address pairs tried reach."""

    reached: int
    tried: int

    @property
    def word(self) -> str:
        """"all", "some" or "none"."""
        if self.reached == self.tried:
            return "all"
        return "some" if self.reached else "none"


@dataclass(frozen=True, slots=True)
class UplinkReach:
    network: str
    out: Share | None  # None: no pair to try (no machine on one side); IPv4
    inbound: Share | None
    out6: Share | None = None  # the same in IPv6 (None in a lab without IPv6 pairs)
    inbound6: Share | None = None


@dataclass(frozen=True, slots=True)
class ReachTable:
    names: tuple[str, ...]
    reachable: frozenset[tuple[str, str]]  # (src, dst) pairs that reach

    def reaches(self, src: str, dst: str) -> bool:
        return (src, dst) in self.reachable


Machine = tuple[str, tuple[Nic, ...]]


def _machines(lab: Lab) -> list[Machine]:
    """VMs and externals with their nics (hosts carry the networks; their own reach is
    in the table)."""
    nodes: tuple[Vm | External, ...] = (*lab.vms, *lab.externals)
    return [(node.name, node.nics) for node in nodes]


def _share(an: Analysis, sources: list[Machine], targets: list[Machine],
           on: set[str], family: Family = IPV4) -> Share | None:
    """How many (source machine, target address of `family` on a network in `on`) pairs
    reach, leaving out machines that share a network."""
    from topoc.model.reach import reach_address

    def networks(m: Machine) -> set[str]:
        return {nic.network for nic in m[1]}

    pairs: list[tuple[str, IPAddress]] = [
        (s[0], address.ip) for s in sources for t in targets for nic in t[1]
        if (address := nic.address_in(family)) is not None and nic.network in on and s[0] != t[0]
        and not networks(s) & networks(t)]
    if not pairs:
        return None
    return Share(sum(reach_address(an, src, ip).reachable for src, ip in pairs), len(pairs))


def uplink_reach(subject: Lab | Analysis) -> list[UplinkReach]:
    """For every managed network: out (its machines -> the LAN's) and in."""
    an = analysis_of(subject)
    lab = an.lab
    external = {n.name for n in lab.networks if not n.managed}
    machines = _machines(lab)
    lan = [m for m in machines if any(nic.network in external for nic in m[1])]
    results = []
    ipv6 = IPV6 in lab.families  # an IPv4-only lab never asks the IPv6 engine
    for network in lab.networks:
        if not network.managed:
            continue
        inside = [m for m in machines if any(nic.network == network.name for nic in m[1])]
        results.append(UplinkReach(
            network.name, _share(an, inside, lan, external), _share(an, lan, inside, {network.name}),
            _share(an, inside, lan, external, IPV6) if ipv6 else None,
            _share(an, lan, inside, {network.name}, IPV6) if ipv6 else None))
    return results


def reach_table(subject: Lab | Analysis) -> ReachTable:
    from topoc.model.reach import predict

    an = analysis_of(subject)
    lab = an.lab
    matrix = predict(an)
    names = tuple(node.name for node in lab.nodes)
    reachable = frozenset((s, d) for s in names for d in names
                          if s != d and matrix.get(s, d).reachable)
    return ReachTable(names, reachable)


def overlay_allowed(lab: Lab) -> bool:
    return len(lab.nodes) <= MAX_NODES


def table_allowed(lab: Lab) -> bool:
    return len(lab.nodes) <= TABLE_MAX_NODES
