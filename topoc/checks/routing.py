"""Checks on the routes a node ends up with that no other check sees: an IPv6 default
route expected from router advertisements that libvirt never sends."""

from __future__ import annotations

from collections.abc import Iterator

from topoc.checks.registry import Finding, check
from topoc.codes import CODES
from topoc.model.analysis import Analysis
from topoc.model.family import IPV6
from topoc.model.platform import DEFAULT_PROFILE
from topoc.model.topology import effective_routes

NO_ROUTER_ADVERTISEMENT = CODES["no-router-advertisement"]


@check(NO_ROUTER_ADVERTISEMENT)
def no_router_advertisement(an: Analysis) -> Iterator[Finding]:
    """A VM with an IPv6 address on a nat, routed or open network with an IPv6 address,
    and no IPv6 default route: its network would advertise one if libvirt ran dnsmasq
    for it (platform.Profile.advertises_router), which it does only with DHCP or DNS."""
    if IPV6 not in an.families:
        return
    lab = an.lab
    for vm in lab.vms:
        if not an.sound(vm.name) or any(r.is_default for r in effective_routes(an, vm.name, IPV6)):
            continue
        for nic in vm.nics:
            net = lab.network(nic.network)
            if (nic.address6 is None or net is None or net.address6 is None or not an.sound(net.name)
                    or net.mode not in DEFAULT_PROFILE.ra_router_modes):
                continue
            yield Finding(nic.address6_span, NO_ROUTER_ADVERTISEMENT.message("quiet", vm=vm.name, network=net.name),
                          NO_ROUTER_ADVERTISEMENT.message("quiet_hint", network=net.name,
                                                          router=net.address6.ip))
            break
