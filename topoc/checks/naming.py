"""Naming checks: bridge names the kernel or libvirt would refuse or confuse, and MAC
addresses that clash or cannot be a guest's (multicast, all zero)."""

from __future__ import annotations

from typing import Iterator

from topoc.model import naming
from topoc.checks.common import at
from topoc.checks.registry import Finding, check
from topoc.diagnostics import MAC_INVALID, Severity, register
from topoc.model.ir import Lab

BRIDGE_NAME = register("bridge-name", Severity.ERROR,
                       "a bridge name too long, reused on one host, or in libvirt's own namespace")
MAC_CONFLICT = register("mac-conflict", Severity.ERROR, "two VM nics with one MAC address")
LIBVIRT_NAME_CONFLICT = register("libvirt-name-conflict", Severity.ERROR,
                                 "two networks, or two VMs, with one libvirt name (`name` or lab prefix)")


@check(BRIDGE_NAME)
def bridge_name(lab: Lab) -> Iterator[Finding]:
    seen: dict[tuple[str | None, str], int] = {}  # (host, bridge) -> line of first use
    for net in sorted(lab.networks, key=lambda n: n.span.line):
        bridge = net.bridge
        if bridge is None or not net.managed:
            continue
        span = at(net.bridge_span, net.span)
        if len(bridge) > naming.IFNAMSIZ:
            # Linux interface names hold 15 characters (IFNAMSIZ 16, with the NUL).
            yield Finding(span, f"bridge name `{bridge}` is {len(bridge)} characters long; Linux "
                          f"allows at most {naming.IFNAMSIZ}",
                          f"shorten it to {naming.IFNAMSIZ} characters or fewer")
        prefix = next((p for p in naming.LIBVIRT_RESERVED_PREFIXES if bridge.startswith(p)), None)
        if prefix == "virbr" and net.exact_name is not None:
            # A network that exists already (`name`), whose bridge libvirt itself named
            # virbrN when it was defined: describing it is not taking libvirt's name.
            prefix = None
        if prefix is not None:
            # libvirt names its own taps vnetN/macvtapN/macvlanN (and auto bridges virbrN):
            # https://libvirt.org/formatdomain.html#virtual-network
            yield Finding(span, f"bridge name `{bridge}` starts with `{prefix}`, a prefix libvirt "
                          "gives its own interfaces", f"pick another name, e.g. `{naming.derived_bridge(lab.name, net.name)}`")
        # A network on several hosts has its bridge on each of them.
        for host in net.hosts or (None,):
            first = seen.setdefault((host, bridge), net.span.line)
            if first != net.span.line:
                yield Finding(span, f"bridge `{bridge}` is already used on host {host} by the "
                              f"network on line {first}", "give each network on a host its own bridge")
                break
    for host in lab.hosts:
        for net in lab.networks_on(host.name):
            if net.bridge in {nic.name for nic in host.nics} and net.via != net.bridge:
                yield Finding(at(net.bridge_span, net.span),
                              f"bridge `{net.bridge}` has the name of {host.name}'s nic",
                              "pick a bridge name no interface of the host has")


@check(LIBVIRT_NAME_CONFLICT)
def libvirt_name_conflict(lab: Lab) -> Iterator[Finding]:
    """libvirt keeps one namespace of networks and one of domains per host: an exact
    `name` equal to another object's name (exact or `<lab>-<name>`) would make the two
    one object. Networks of different hosts, and a network and a domain, may share one."""
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
                          f"{what} `{name}` would be libvirt {kind if kind == 'network' else 'domain'} "
                          f"`{libvirt}`, the name of {what} `{first[0]}` (line {first[1]})",
                          "give each its own libvirt name: change or drop one `name`")


@check(MAC_CONFLICT)
def mac_conflict(lab: Lab) -> Iterator[Finding]:
    first: dict[str, tuple[str, int]] = {}
    for vm in lab.vms:
        for nic in vm.nics:
            if nic.mac is None:
                continue
            owner = first.setdefault(nic.mac, (vm.name, nic.span.line))
            if owner != (vm.name, nic.span.line):
                yield Finding(at(nic.mac_span, nic.span),
                              f"MAC {nic.mac} is already used by {owner[0]} (line {owner[1]})",
                              "leave `mac` out and topoc derives a unique one, or change a digit")


@check(MAC_INVALID)
def mac_unusable(lab: Lab) -> Iterator[Finding]:
    """Lowering rejects malformed MACs; here, the well-formed ones no NIC may carry."""
    for vm in lab.vms:
        for nic in vm.nics:
            if nic.mac is None or nic.mac_derived:
                continue
            octets = [int(part, 16) for part in nic.mac.split(":")]
            span = at(nic.mac_span, nic.span)
            if not any(octets):
                yield Finding(span, f"MAC {nic.mac} is all zero", "use e.g. 52:54:00:xx:xx:xx, or leave "
                              "`mac` out to have one derived")
            elif octets[0] & 1:
                # The I/G bit (least significant bit of the first octet) marks a group address.
                yield Finding(span, f"MAC {nic.mac} is a multicast address (the first octet is odd)",
                              "a NIC needs a unicast MAC: make the first octet even, e.g. "
                              "52:54:00:xx:xx:xx")
