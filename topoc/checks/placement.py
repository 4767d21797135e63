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

from topoc.checks.registry import Finding, check
from topoc.diagnostics import Severity, register
from topoc.model.ir import Host, Lab, Vm

NIC_PLACEMENT = register("nic-placement", Severity.ERROR,
                         "a nic on a network its node cannot be plugged into")
FORWARD_TARGET = register("forward-target", Severity.WARNING,
                          "a `forward` to a VM with no static address the host can DNAT to")


@check(NIC_PLACEMENT)
def nic_placement(lab: Lab) -> Iterator[Finding]:
    host_lans = {h.name: {nic.network for nic in h.nics} for h in lab.hosts}
    for node in lab.nodes:
        for nic in node.nics:
            network = lab.network(nic.network)
            if network is None:
                continue
            if isinstance(node, Vm):
                if network.managed and node.host not in network.hosts:
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
def forward_target(lab: Lab) -> Iterator[Finding]:
    from topoc.model.reach import forward_vm_address

    for fwd in lab.forwards:
        if isinstance(lab.node(fwd.vm), Vm) and forward_vm_address(lab, fwd) is None:
            yield Finding(
                fwd.span,
                f"{fwd.vm} has no static address on a nat, routed or open network of its host, "
                f"so no DNAT rule is generated and port {fwd.port} stays closed",
                f"give {fwd.vm} a static `address` on such a network")
