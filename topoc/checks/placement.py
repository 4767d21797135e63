"""Placement checks: every nic can be plugged in where its node runs, and every
`forward` has somewhere to go.

A libvirt network lives on one host, so only that host's VMs can join it; a VM nic on an
external network is a macvtap on its host's NIC there, so the host needs one; hosts and
external machines sit on external networks, never inside a host's managed network. A
`forward` DNATs to the VM's static address on a nat, routed or open network (the rule
topoc.model.reach and topoc.backends.host share); without one no rule is generated.
"""

from __future__ import annotations

from collections.abc import Iterator

from topoc.checks.registry import Finding, check
from topoc.codes import FORWARD_TARGET, NIC_PLACEMENT
from topoc.model.analysis import Analysis
from topoc.model.family import FAMILIES
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
                if network.managed and node.host not in network.hosts:
                    where = dict(vm=node.name, host=node.host, network=network.name,
                                 network_host=network.host)
                    yield Finding(nic.span, NIC_PLACEMENT.message("other_host", **where),
                                  NIC_PLACEMENT.message("other_host_hint", **where))
                elif not network.managed and network.name not in host_lans.get(node.host, set()):
                    where = dict(vm=node.name, host=node.host, network=network.name)
                    yield Finding(nic.span, NIC_PLACEMENT.message("lan_without_host_nic", **where),
                                  NIC_PLACEMENT.message("lan_without_host_nic_hint", **where))
            elif network.managed:
                what = "host" if isinstance(node, Host) else "external machine"
                yield Finding(
                    nic.span,
                    NIC_PLACEMENT.message("inside_host", what=what, node=node.name, model=network.model,
                                          network=network.name, network_host=network.host),
                    NIC_PLACEMENT.message("inside_host_hint_host" if isinstance(node, Host)
                                          else "inside_host_hint", node=node.name))


@check(FORWARD_TARGET)
def forward_target(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    from topoc.model.reach import forward_vm_address

    for fwd in lab.forwards:
        # A forward DNATs in each family its VM has a target in: none at all is the problem.
        if (an.sound(fwd.vm) and isinstance(lab.node(fwd.vm), Vm)
                and all(forward_vm_address(lab, fwd, family) is None for family in FAMILIES)):
            yield Finding(fwd.span, FORWARD_TARGET.message("no_target", vm=fwd.vm, port=fwd.port),
                          FORWARD_TARGET.message("no_target_hint", vm=fwd.vm))
