"""Naming checks: bridge names libvirt would confuse or a host already uses, and MAC
addresses that clash or cannot be a guest's (multicast, all zero). (A bridge name too
long for the kernel is a bad value, refused where all interface names are: in
topoc.front.values.ifname.)"""

from __future__ import annotations

from collections.abc import Iterator

from topoc.checks.common import at
from topoc.checks.registry import Finding, check
from topoc.codes import BRIDGE_NAME, LIBVIRT_NAME_CONFLICT, MAC_CONFLICT
from topoc.diagnostics import MAC_INVALID
from topoc.model import naming
from topoc.model.analysis import Analysis


@check(BRIDGE_NAME)
def bridge_name(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    seen: dict[tuple[str | None, str], int] = {}  # (host, bridge) -> line of first use
    for net in sorted(lab.networks, key=lambda n: n.span.line):
        bridge = net.bridge
        if bridge is None or not net.managed:
            continue
        span = at(net.bridge_span, net.span)
        prefix = next((p for p in naming.LIBVIRT_RESERVED_PREFIXES if bridge.startswith(p)), None)
        if prefix is not None:
            # libvirt names its own taps vnetN/macvtapN/macvlanN (virbr is topoc.checks.limits'):
            # https://libvirt.org/formatdomain.html#virtual-network
            yield Finding(span, BRIDGE_NAME.message("reserved", bridge=bridge, prefix=prefix),
                          BRIDGE_NAME.message("reserved_hint",
                                              example=naming.derived_bridge(lab.name, net.name)))
        # A network on several hosts has its bridge on each of them.
        for on in net.hosts or (None,):
            first = seen.setdefault((on, bridge), net.span.line)
            if first != net.span.line:
                yield Finding(span, BRIDGE_NAME.message("reused", bridge=bridge, host=on, line=first),
                              BRIDGE_NAME.message("reused_hint"))
                break
    for host in lab.hosts:
        for net in lab.networks_on(host.name):
            if net.bridge in {nic.name for nic in host.nics} and net.via != net.bridge:
                yield Finding(at(net.bridge_span, net.span),
                              BRIDGE_NAME.message("nic", bridge=net.bridge, host=host.name),
                              BRIDGE_NAME.message("nic_hint"))


@check(LIBVIRT_NAME_CONFLICT)
def libvirt_name_conflict(an: Analysis) -> Iterator[Finding]:
    """libvirt keeps one namespace of networks and one of domains per host: an exact
    `name` equal to another object's name (exact or `<lab>-<name>`) would make the two
    one object. Networks of different hosts, and a network and a domain, may share one."""
    lab = an.lab
    seen: dict[tuple[str, str | None, str], tuple[str, int]] = {}
    objects = [("network", n.host, n.name, n.exact_name, n.exact_name_span, n.span)
               for n in lab.networks if n.managed]
    objects += [("vm", v.host, v.name, v.exact_name, v.exact_name_span, v.span) for v in lab.vms]
    for kind, host, name, exact, exact_span, span in sorted(objects, key=lambda o: o[5].line):
        libvirt = naming.libvirt_name(lab.name, name, exact)
        first = seen.setdefault((kind, host, libvirt), (name, span.line))
        if first != (name, span.line):
            what = "network" if kind == "network" else "VM"
            yield Finding(at(exact_span, span),
                          LIBVIRT_NAME_CONFLICT.message("taken", what=what, name=name, libvirt=libvirt,
                                                        kind=kind if kind == "network" else "domain",
                                                        first=first[0], line=first[1]),
                          LIBVIRT_NAME_CONFLICT.message("taken_hint"))


@check(MAC_CONFLICT)
def mac_conflict(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    first: dict[str, tuple[str, int]] = {}
    for vm in lab.vms:
        for nic in vm.nics:
            if nic.mac is None:
                continue
            owner = first.setdefault(nic.mac, (vm.name, nic.span.line))
            if owner != (vm.name, nic.span.line):
                yield Finding(at(nic.mac_span, nic.span),
                              MAC_CONFLICT.message("taken", mac=nic.mac, owner=owner[0], line=owner[1]),
                              MAC_CONFLICT.message("taken_hint"))


@check(MAC_INVALID)
def mac_unusable(an: Analysis) -> Iterator[Finding]:
    """Lowering rejects malformed MACs; here, the well-formed ones no NIC may carry."""
    lab = an.lab
    for vm in lab.vms:
        for nic in vm.nics:
            if nic.mac is None or nic.mac_derived:
                continue
            octets = [int(part, 16) for part in nic.mac.split(":")]
            span = at(nic.mac_span, nic.span)
            if not any(octets):
                yield Finding(span, MAC_INVALID.message("all_zero", mac=nic.mac),
                              MAC_INVALID.message("all_zero_hint"))
            elif octets[0] & 1:
                # The I/G bit (least significant bit of the first octet) marks a group address.
                yield Finding(span, MAC_INVALID.message("multicast", mac=nic.mac),
                              MAC_INVALID.message("multicast_hint"))
