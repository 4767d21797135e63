"""Checks of networks on several hosts (`network NAME on kvm1, kvm2`): one L2 segment
whose bridges topoc joins with VXLAN (https://docs.kernel.org/networking/vxlan.html),
unicast over the hosts' addresses on one shared external network, the underlay.

The hosts need such a network (each with an address on it), each spanning network its
own VXLAN network identifier, and room in the MTU for the 50 bytes VXLAN over IPv4 adds
(RFC 7348 section 4.3): a frame of the segment's MTU plus 50 must fit the underlay's
(the external network's `mtu`, else Ethernet's 1500).
"""

from __future__ import annotations

from collections.abc import Iterator

from topoc.checks.common import at
from topoc.checks.registry import Finding, check
from topoc.codes import NO_UNDERLAY, VNI_CONFLICT, VXLAN_MTU
from topoc.model.analysis import Analysis
from topoc.model.ir import Network
from topoc.model.topology import underlay

VXLAN_OVERHEAD = 50
UNDERLAY_MTU = 1500


@check(NO_UNDERLAY)
def no_underlay(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for net in lab.networks:
        if net.spanning and an.sound(net.name, *net.hosts) and all(lab.node(h) is not None for h in net.hosts) \
                and underlay(lab, net) is None:
            yield Finding(net.span, NO_UNDERLAY.message("network", network=net.name, hosts=", ".join(net.hosts)),
                          NO_UNDERLAY.hint("network"))


@check(VNI_CONFLICT)
def vni_conflict(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    seen: dict[int, Network] = {}
    for net in sorted((n for n in lab.networks if n.spanning), key=lambda n: n.span.line):
        assert net.vni is not None
        first = seen.setdefault(net.vni, net)
        if first is not net:
            yield Finding(at(net.vni_span, net.span),
                          VNI_CONFLICT.message("taken", network=net.name, vni=net.vni, first=first.name,
                                               line=first.span.line),
                          VNI_CONFLICT.hint("taken"))


@check(VXLAN_MTU)
def vxlan_mtu(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for net in lab.networks:
        if not net.spanning or net.mtu is None:
            continue
        found = underlay(lab, net)
        lan = lab.network(found[0]) if found is not None else None
        room = lan.mtu if lan is not None and lan.mtu is not None else UNDERLAY_MTU
        what = f"{lan.name}'s MTU {room}" if lan is not None and lan.mtu is not None \
            else f"Ethernet's {UNDERLAY_MTU}"
        if net.mtu + VXLAN_OVERHEAD > room:
            yield Finding(net.span,
                          VXLAN_MTU.message("no_room", network=net.name, mtu=net.mtu, overhead=VXLAN_OVERHEAD,
                                            needed=net.mtu + VXLAN_OVERHEAD, what=what),
                          VXLAN_MTU.hint("no_room", fits=room - VXLAN_OVERHEAD))
