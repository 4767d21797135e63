"""Reachability checks, on the reachability engine (topoc.model.reach): segments nobody can
use, routed networks whose LAN peers get no replies, and `expect` lines the model
contradicts.

They ask single questions, never the whole matrix: one probe per (network, LAN peer)
and one per `expect`, so a lab of 10,000 VMs is checked in linear time.
"""

from __future__ import annotations

from collections.abc import Iterator

from topoc.checks.common import plural
from topoc.checks.registry import Finding, check
from topoc.codes import EXPECT_FAILED, UNREACHABLE_SEGMENT
from topoc.model.analysis import Analysis
from topoc.model.family import FAMILIES, IPV4, Family, IPAddress, family_of, parse_address
from topoc.model.ir import Expect, External, Host, Mode, Network, Nic
from topoc.model.platform import DEFAULT_PROFILE
from topoc.model.reach import Probe, confirmed_fix, explain_probe, pair, probe


def _members(an: Analysis) -> dict[str, list[tuple[str, Nic]]]:
    """Network -> its VMs' (name, nic) in source order."""
    lab = an.lab
    members: dict[str, list[tuple[str, Nic]]] = {n.name: [] for n in lab.networks}
    for vm in lab.vms:
        for nic in vm.nics:
            members.setdefault(nic.network, []).append((vm.name, nic))
    return members


def _routed(net: Network, family: Family) -> bool:
    """Whether the host routes the network's traffic of the family with the VMs' own
    addresses (no NAT of libvirt's or the lab's), so the LAN needs a route back: routed
    and open networks without `masquerade`, and a nat network's IPv6 without `nat6`
    (libvirt routes it, https://libvirt.org/formatnetwork.html#addressing). The host
    forwards a family only for a network with an address of it (bridge_driver.c
    networkEnableIPForwarding)."""
    routes = net.mode in DEFAULT_PROFILE.routed_modes or net.mode is Mode.NAT
    return routes and not net.masquerades(family) and net.address_in(family) is not None


@check(UNREACHABLE_SEGMENT)
def unreachable_segment(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    members = _members(an)
    for net in lab.networks:
        if not net.managed or not an.sound(net.name):
            continue  # a poisoned network's VMs may be missing: say nothing of it
        mine = members.get(net.name, [])
        header = net.span.sub(0, len("network"))
        if not mine:
            yield Finding(header, UNREACHABLE_SEGMENT.message("empty", network=net.name),
                          UNREACHABLE_SEGMENT.message("empty_hint", network=net.name))
            continue
        if net.mode is Mode.BRIDGED:
            continue
        addressed = [nic for _, nic in mine if nic.addresses]
        if not any(net.address_in(f) for f in FAMILIES) and len(addressed) < 2:
            yield Finding(header, UNREACHABLE_SEGMENT.message("cut_off", network=net.name),
                          UNREACHABLE_SEGMENT.message("cut_off_hint"))
            continue
        # A network that masquerades gets its replies like a nat one, whatever the LAN's
        # routes; that the LAN cannot open connections to it is then the point.
        for family in FAMILIES:
            mine_in = [(name, ip) for name, nic in mine if (ip := _ip(nic, family)) is not None]
            if mine_in and _routed(net, family):
                finding = _lan_replies(an, net, mine_in, family)
                if finding is not None:
                    yield finding


def _ip(nic: Nic, family: Family) -> IPAddress | None:
    address = nic.address_in(family)
    return address.ip if address is not None else None


def _lan_peers(an: Analysis, host: str) -> list[str]:
    """Hosts and externals sharing an L2 segment with the host's own nics."""
    lab = an.lab
    topo = an.topology  # the wiring (segments), the same in both families
    uplinks = {i.segment for i in topo.interfaces[host] if i.kind == "nic"}
    peers = []
    candidates: tuple[Host | External, ...] = (*lab.hosts, *lab.externals)
    for node in candidates:
        if node.name != host and any(i.segment in uplinks for i in topo.interfaces[node.name]):
            peers.append(node.name)
    return peers


def _lan_replies(an: Analysis, net: Network, mine: list[tuple[str, IPAddress]], family: Family) -> Finding | None:
    """A routed network is the classic trap: VMs send out fine, but a LAN peer's packets
    (and so the replies to the VMs) only come back if the peer's side has a route to the
    network's subnet via the host."""
    vm, address = mine[0]
    assert net.host is not None
    failed: list[tuple[str, Probe]] = []
    verdicts: dict[tuple, Probe] = {}
    for peer in _lan_peers(an, net.host):
        # Peers that send to the same next hop from the same subnet get the same answer:
        # probe one of each class (a LAN of many hosts costs a handful of probes).
        key = _peer_class(an, peer, address, family)
        p = verdicts.get(key) if key is not None else None
        if p is None:
            p = probe(an, peer, address)
            if key is not None:
                verdicts[key] = p
        if not p.ok:
            failed.append((peer, p))
    if not failed or not an.sound(net.host, *(peer for peer, _ in failed)):
        return None
    # Each distinct fix once, offered only when the engine confirms it (confirmed_fix).
    tried = {p.fix: p for _, p in reversed(failed) if p.fix}
    fixes = [fix for fix in (_confirmed(an, p) for p in reversed(tried.values())) if fix]
    first = failed[0][1]
    # The other way out: NAT, so the LAN need not route back (IPv6: nat6, or a nat network).
    other = "no_replies_fix" if family is IPV4 else \
        "no_replies_fix_nat6" if net.mode is Mode.NAT else "no_replies_fix_routed6"
    return Finding(net.mode_span,
                   UNREACHABLE_SEGMENT.message("no_replies", model=net.model, network=net.name,
                                               subnet=net.subnet_in(family), peers=plural(peer for peer, _ in failed),
                                               failure=first.failure, vm=vm, address=address),
                   "; ".join(fixes + [UNREACHABLE_SEGMENT.message(other, network=net.name)]))


# Confirming a fix builds the lab's topology again with the edit (reach.confirmed_fix),
# which costs time linear in the lab's nodes. A lab with many networks the LAN gets no
# replies from (say, a hundred nat networks whose IPv6 is routed with no route back)
# confirms fixes until CONFIRMATION_BUDGET nodes have been rebuilt and offers the others
# as the engine proposes them, saying so: the check stays linear in the lab, not in
# networks times VMs. (A lab of a hundred nodes confirms two hundred fixes; one of
# 10,000, two.)
CONFIRMATION_BUDGET = 20_000
UNCONFIRMED = " (not tried on the lab: too many fixes to try in a lab this size)"


def _confirmed(an: Analysis, p: Probe) -> str:
    spent = an.memo("unreachable-segment-confirmed-nodes", lambda: [0])
    if spent[0] >= CONFIRMATION_BUDGET:
        return p.fix + UNCONFIRMED if p.fix else p.fix
    lab = an.lab
    spent[0] += len(lab.hosts) + len(lab.vms) + len(lab.externals)
    return confirmed_fix(p)[0]


def _peer_class(an: Analysis, peer: str, address: IPAddress, family: Family) -> tuple | None:
    """What decides a probe from `peer` to `address`: the route's next hop and interface
    segment, and the subnet the answer comes back to. None: no route (probe it alone)."""
    choice = an.engine_in(family).lookup(peer, address)
    if choice is None or choice.iface.address is None:
        return None
    hop = choice.next_hop(address)
    if hop == address:
        return None
    return (hop, choice.iface.segment, choice.iface.address.network)


def _source(an: Analysis, text: str) -> str | None:
    lab = an.lab
    if lab.node(text) is not None:
        return text
    address = parse_address(text)
    if address is None:
        return None
    owners = an.engine_in(family_of(address)).owners.get(address, [])
    return owners[0] if owners else None


@check(EXPECT_FAILED)
def expect_failed(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for exp in lab.expects:
        if not an.sound(exp.src, exp.dst):
            continue  # a node left incomplete by an error already reported
        finding = _check_expect(an, exp)
        if finding is not None:
            yield finding


def _check_expect(an: Analysis, exp: Expect) -> Finding | None:
    lab = an.lab
    src = _source(an, exp.src)
    arrow = "->" if exp.reachable else "!->"
    said = f"expect {exp.src} {arrow} {exp.dst}"
    if src is None:
        if an.poisoned:
            return None  # the address may be on a nic that did not lower
        return Finding(exp.src_span, EXPECT_FAILED.message("no_owner", said=said, src=exp.src),
                       EXPECT_FAILED.message("no_owner_hint"))
    if not an.sound(src):
        return None
    if lab.node(exp.dst) is not None:
        # A node is reached at every address of both families; from a source given as an
        # address, at its addresses of that address's family.
        source = parse_address(exp.src)
        result, probes = pair(an, src, exp.dst, family_of(source) if source is not None else None)
    else:
        target = parse_address(exp.dst)
        assert target is not None  # the front end keeps only nodes and addresses
        p = probe(an, src, target)
        result, probes = None, [p]
    reachable = result.reachable if result is not None else probes[0].ok
    if reachable == exp.reachable:
        return None
    if any(not an.sound(*p.path) for p in probes):
        return None  # the verdict may only follow from a node left incomplete
    if not probes:
        return Finding(exp.span, EXPECT_FAILED.message("no_address", said=said, dst=exp.dst),
                       EXPECT_FAILED.message("no_address_hint", dst=exp.dst))
    shown = next((p for p in probes if not p.ok), probes[0]) if exp.reachable else probes[0]
    # The story's lines go under the hint's first line, indented past "   hint: ".
    story = explain_probe(shown).replace("\n", "\n" + " " * 7)
    if exp.reachable:
        return Finding(exp.span, EXPECT_FAILED.message("unreachable", said=said, failure=shown.failure), story)
    return Finding(exp.span, EXPECT_FAILED.message("reachable", said=said, src=exp.src, dst=exp.dst,
                                                   path=" > ".join(shown.path)),
                   EXPECT_FAILED.message("reachable_hint", story=story))
