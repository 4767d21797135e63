"""Placement checks: every nic can be plugged in where its node runs, and every
`forward` has somewhere to go.

A libvirt network lives on one host, so only that host's VMs can join it; a VM nic on an
external network is a macvtap on its host's NIC there, so the host needs one; hosts and
external machines sit on external networks, never inside a host's managed network. A
`forward` DNATs to the VM's static address on a nat, routed or open network (the rule
topoc.model.reach and topoc.backends.host share); without one no rule is generated.
"""

from __future__ import annotations

from typing import Iterator

from topoc.codes import FORWARD_TARGET, NIC_PLACEMENT
from topoc.checks.registry import Finding, check
from topoc.model.analysis import Analysis
from topoc.model.ir import Host, Vm



@check(NIC_PLACEMENT)
def nic_placement(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    host_lans = {h.name: {nic.network for nic in h.nics} for h in lab.hosts}
    for node in lab.nodes:
        for nic in node.nics:
            network = lab.network(nic.network)
            if network is None:
                continue
            if isinstance(node, Vm):
                if network.managed and network.host != node.host:
                    yield Finding(
                        nic.span,
                        f"VM {node.name} runs on {node.host}, but network {network.name} is on "
                        f"{network.host}: a libvirt network lives on one host",
                        f"run the VM there (`vm {node.name} on {network.host}`), or put this nic "
                        f"on a network of {node.host}")
                elif not network.managed and network.name not in host_lans.get(node.host, set()):
                    yield Finding(
                        nic.span,
                        f"VM {node.name} is on the LAN {network.name} directly (a macvtap on its "
                        f"host's NIC there), but {node.host} has no nic on {network.name}",
                        f"give host {node.host} a nic on {network.name}, or use a bridged network")
            elif network.managed:
                what = "host" if isinstance(node, Host) else "external machine"
                yield Finding(
                    nic.span,
                    f"{what} {node.name} cannot plug into {network.model} network {network.name}: "
                    f"it lives inside host {network.host}",
                    "the host's address on it is the network's `address`"
                    if isinstance(node, Host) else
                    f"put {node.name} on an external network; it reaches the VMs through the host")


@check(FORWARD_TARGET)
def forward_target(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    from topoc.model.reach import forward_vm_address

    for fwd in lab.forwards:
        if an.sound(fwd.vm) and isinstance(lab.node(fwd.vm), Vm) and forward_vm_address(lab, fwd) is None:
            yield Finding(fwd.span, FORWARD_TARGET.message("no_target", vm=fwd.vm, port=fwd.port),
                          FORWARD_TARGET.message("no_target_hint", vm=fwd.vm))
