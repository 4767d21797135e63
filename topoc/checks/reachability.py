"""Reachability checks, on the reachability engine (topoc.model.reach): segments nobody can
use, routed networks whose LAN peers get no replies, and `expect` lines the model
contradicts.

They ask single questions, never the whole matrix: one probe per (network, LAN peer)
and one per `expect`, so a lab of 10,000 VMs is checked in linear time.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Iterator

from topoc.checks.common import plural
from topoc.model.platform import DEFAULT_PROFILE
from topoc.checks.registry import Finding, check
from topoc.diagnostics import Severity, register
from topoc.model.topology import topology
from topoc.model.ir import Expect, Lab, Mode, Network
from topoc.model.reach import Probe, engine, explain_probe, pair, probe

UNREACHABLE_SEGMENT = register("unreachable-segment", Severity.WARNING,
                               "a network nobody can reach, or whose LAN peers get no replies")
EXPECT_FAILED = register("expect-failed", Severity.ERROR, "an `expect` the model contradicts")


def _members(lab: Lab) -> dict[str, list[tuple[str, IPv4Address | None]]]:
    """Network -> its VMs' (name, address) in source order."""
    members: dict[str, list[tuple[str, IPv4Address | None]]] = {n.name: [] for n in lab.networks}
    for vm in lab.vms:
        for nic in vm.nics:
            members.setdefault(nic.network, []).append((vm.name, nic.ip))
    return members


@check(UNREACHABLE_SEGMENT)
def unreachable_segment(lab: Lab) -> Iterator[Finding]:
    members = _members(lab)
    for net in lab.networks:
        if not net.managed:
            continue
        mine = members.get(net.name, [])
        header = net.span.sub(0, len("network"))
        if not mine:
            yield Finding(header, f"network `{net.name}` has no VM on it",
                          f"attach a VM with `nic on {net.name}`, or remove the network")
            continue
        if net.mode is Mode.BRIDGED:
            continue
        addressed = [ip for _, ip in mine if ip is not None]
        if net.address is None and len(addressed) < 2:
            yield Finding(header, f"nothing can reach isolated network `{net.name}`: it has no address "
                          "(so the host is not on it) and fewer than two VMs with an address",
                          "give it an `address` to make it host-only, or put a second VM on it")
            continue
        # A network that masquerades gets its replies like a nat one, whatever the LAN's
        # routes; that the LAN cannot open connections to it is then the point.
        if net.mode in DEFAULT_PROFILE.routed_modes and addressed and not net.masquerade:
            finding = _lan_replies(lab, net, mine)
            if finding is not None:
                yield finding


def _lan_peers(lab: Lab, host: str) -> list[str]:
    """Hosts and externals sharing an L2 segment with the host's own nics."""
    topo = topology(lab)
    uplinks = {i.segment for i in topo.interfaces[host] if i.kind == "nic"}
    peers = []
    for node in (*lab.hosts, *lab.externals):
        if node.name != host and any(i.segment in uplinks for i in topo.interfaces[node.name]):
            peers.append(node.name)
    return peers


def _lan_replies(lab: Lab, net: Network, mine: list[tuple[str, IPv4Address | None]]) -> Finding | None:
    """A routed network is the classic trap: VMs send out fine, but a LAN peer's packets
    (and so the replies to the VMs) only come back if the peer's side has a route to the
    network's subnet via the host."""
    vm, address = next((name, ip) for name, ip in mine if ip is not None)
    assert address is not None and net.host is not None
    failed: list[tuple[str, Probe]] = []
    verdicts: dict[tuple, Probe] = {}
    for peer in _lan_peers(lab, net.host):
        # Peers that send to the same next hop from the same subnet get the same answer:
        # probe one of each class (a LAN of many hosts costs a handful of probes).
        key = _peer_class(lab, peer, address)
        p = verdicts.get(key) if key is not None else None
        if p is None:
            p = probe(lab, peer, address)
            if key is not None:
                verdicts[key] = p
        if not p.ok:
            failed.append((peer, p))
    if not failed:
        return None
    fixes = list(dict.fromkeys(p.fix for _, p in failed if p.fix))
    first = failed[0][1]
    return Finding(net.mode_span,
                   f"{net.model} network `{net.name}` ({net.subnet}) gets no replies from "
                   f"{plural(peer for peer, _ in failed)}: {first.failure} (tried {vm} {address})",
                   "; ".join(fixes + ["or use `mode nat` if the LAN need not reach the VMs"]))


def _peer_class(lab: Lab, peer: str, address: IPv4Address) -> tuple | None:
    """What decides a probe from `peer` to `address`: the route's next hop and interface
    segment, and the subnet the answer comes back to. None: no route (probe it alone)."""
    choice = engine(lab).lookup(peer, address)
    if choice is None or choice.iface.address is None:
        return None
    hop = choice.next_hop(address)
    if hop == address:
        return None
    return (hop, choice.iface.segment, choice.iface.address.network)


def _source(lab: Lab, text: str) -> str | None:
    if lab.node(text) is not None:
        return text
    try:
        owners = engine(lab).owners.get(IPv4Address(text), [])
    except ValueError:
        return None
    return owners[0] if owners else None


@check(EXPECT_FAILED)
def expect_failed(lab: Lab) -> Iterator[Finding]:
    for exp in lab.expects:
        finding = _check_expect(lab, exp)
        if finding is not None:
            yield finding


def _check_expect(lab: Lab, exp: Expect) -> Finding | None:
    src = _source(lab, exp.src)
    arrow = "->" if exp.reachable else "!->"
    said = f"expect {exp.src} {arrow} {exp.dst}"
    if src is None:
        return Finding(exp.src_span, f"{said}: no node has the address {exp.src}",
                       "name a node, or an address one of them has")
    if lab.node(exp.dst) is not None:
        result, probes = pair(lab, src, exp.dst)
    else:
        p = probe(lab, src, IPv4Address(exp.dst))
        result, probes = None, [p]
    reachable = result.reachable if result is not None else probes[0].ok
    if reachable == exp.reachable:
        return None
    if not probes:
        return Finding(exp.span, f"{said} does not hold: {exp.dst} has no address",
                       f"give {exp.dst} a static `address`: topoc does not predict DHCP leases")
    shown = next((p for p in probes if not p.ok), probes[0]) if exp.reachable else probes[0]
    # The story's lines go under the hint's first line, indented past "   hint: ".
    story = explain_probe(shown).replace("\n", "\n" + " " * 7)
    if exp.reachable:
        message = f"{said} does not hold: {shown.failure}"
        hint = story
    else:
        path = " > ".join(shown.path)
        message = f"{said} does not hold: {exp.src} gets replies from {exp.dst} ({path})"
        hint = f"it is reachable, hop by hop:\n{story}"
    return Finding(exp.span, message, hint)
