"""The netlab side of the benchmark: install netlab, describe a topoc lab to it, run it.

netlab (PyPI `networklab`) is the best-known peer of topoc. This module does three
things and no measuring (bench/run.py measures both tools the same way):

- `ensure_netlab()` installs netlab on first use into its own virtualenv,
  bench/.venv-netlab (git-ignored), so its dependencies never mix with topoc's;
- `netlab_topology(lab)` writes the equivalent netlab topology of a topoc lab (IR):
  one `linux` node per VM, one multi-access link (a LAN) per topoc network that has
  VMs, with every VM nic's static address, provider libvirt;
- `create_command(...)` is the `netlab create` command line for a work directory.

`netlab create` with provider libvirt only generates files (Vagrantfile, Ansible
inventory, host_vars, node_files, a pickled snapshot): it needs neither a libvirt daemon
nor vagrant nor Ansible. `netlab up` is what would touch libvirt; we never run it.

`differences(lab)` says, for the output and the README, what netlab cannot describe of
the same lab.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from collections import defaultdict
from pathlib import Path

from topoc.model.ir import Lab, Mode

BENCH = Path(__file__).resolve().parent
NETLAB_VENV = BENCH / ".venv-netlab"
NETLAB_PACKAGE = "networklab"

# netlab's default management pool is a /24 (192.168.121.0/24): too small for 1,000
# nodes. Every netlab libvirt node gets a management nic there; topoc's VMs have none.
# netlab also caps node ids at defaults.const.MAX_NODE_ID (150): raised to the lab's size.
MGMT_POOL = "10.192.0.0/12"


class NetlabUnavailable(Exception):
    """netlab could not be installed (say why: a missing dependency, no registry)."""


def netlab_executable() -> Path:
    return NETLAB_VENV / "bin" / "netlab"


def ensure_netlab(log=print) -> Path:
    """Install netlab into bench/.venv-netlab on first use; return its `netlab`."""
    exe = netlab_executable()
    if exe.exists():
        return exe
    log(f"installing {NETLAB_PACKAGE} into {NETLAB_VENV} (first use) ...")
    venv.EnvBuilder(with_pip=True, clear=True).create(NETLAB_VENV)
    pip = [str(NETLAB_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    result = subprocess.run([*pip, NETLAB_PACKAGE], capture_output=True, text=True)
    if result.returncode != 0 or not exe.exists():
        raise NetlabUnavailable(f"pip install {NETLAB_PACKAGE} failed:\n{result.stderr.strip()}")
    return exe


def netlab_version(exe: Path) -> str:
    result = subprocess.run([str(exe), "version"], capture_output=True, text=True)
    first = result.stdout.strip().splitlines()[:1]
    return first[0] if first else "netlab (version unknown)"


def create_command(exe: Path, topology: Path) -> list[str]:
    """`netlab create` with provider libvirt and linux nodes: it only writes files."""
    return [str(exe), "create", "--quiet", "--provider", "libvirt", "--device", "linux",
            str(topology)]


def _lans(lab: Lab) -> dict[str, list[tuple[str, str | None]]]:
    """Network name -> [(vm, address/prefix or None)], networks in source order."""
    lans: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for vm in lab.vms:
        for nic in vm.nics:
            lans[nic.network].append((vm.name, str(nic.address) if nic.address else None))
    order = {n.name: i for i, n in enumerate(lab.networks)}
    return dict(sorted(lans.items(), key=lambda kv: order.get(kv[0], len(order))))


def netlab_topology(lab: Lab) -> str:
    """The netlab topology (YAML text) of a lab: a linux node per VM, a LAN per network."""
    lines = [
        f"# The netlab twin of topoc lab {lab.name!r}: written by bench/netlab_bench.py.",
        f"name: {_netlab_name(lab.name)}",
        "provider: libvirt",
        "defaults.device: linux",
        f"addressing.mgmt.ipv4: {MGMT_POOL}",
        f"defaults.const.MAX_NODE_ID: {max(150, len(lab.vms) + 10)}",
        "nodes:",
    ]
    lines += [f"  {vm.name}: {{}}" for vm in lab.vms]
    lines.append("links:")
    for network, members in _lans(lab).items():
        net = lab.network(network)
        lines.append(f"- bridge: {_bridge(lab, network)}")
        if net is not None and net.subnet is not None:
            lines.append(f"  prefix.ipv4: {net.subnet}")
        lines.append("  interfaces:")
        for vm, address in members:
            lines.append(f"  - node: {vm}")
            if address:
                lines.append(f"    ipv4: {address}")
    return "\n".join(lines) + "\n"


def _netlab_name(name: str) -> str:
    # netlab uses the lab name as a prefix of libvirt objects; keep it short and plain.
    return "".join(c for c in name if c.isalnum())[:12] or "bench"


def _bridge(lab: Lab, network: str) -> str:
    net = lab.network(network)
    if net is not None and net.bridge:
        return net.bridge
    return network[:15]


def differences(lab: Lab) -> list[str]:
    """What the netlab twin does not describe the same way as the topoc lab."""
    modes = sorted({n.mode.value for n in lab.networks if n.name in _lans(lab)})
    out = []
    if len(lab.hosts) > 1:
        out.append(f"netlab runs a lab on one hypervisor: topoc's {len(lab.hosts)} hosts "
                   "are flattened into one netlab lab")
    if {Mode.NAT.value, Mode.ROUTED.value} & set(modes):
        out.append(f"netlab links have no forward mode: topoc's {'/'.join(modes)} networks "
                   "become plain LAN bridges (no <forward>, no host gateway address, no DHCP)")
    out.append("netlab adds a management nic per node on its own NAT network "
               f"({MGMT_POOL}); topoc VMs have only the nics the lab declares")
    unmanaged = [n.name for n in lab.networks if n.name not in _lans(lab)]
    if unmanaged:
        out.append(f"{len(unmanaged)} network(s) with no VM (e.g. the hosts' LAN) have no "
                   "netlab link: netlab models the lab's nodes, not the hypervisors")
    if lab.forwards or lab.expects:
        out.append("port forwards and expect assertions have no netlab equivalent")
    return out


def main(argv: list[str]) -> int:
    """`python bench/netlab_bench.py LAB.topo`: print the netlab twin of a lab."""
    from topoc.compiler import compile_file

    if len(argv) != 1:
        print("usage: netlab_bench.py LAB.topo", file=sys.stderr)
        return 2
    result = compile_file(argv[0], checks=False)
    if not result.ok:
        print(f"{argv[0]}: does not lower; run `topoc check` on it", file=sys.stderr)
        return 1
    sys.stdout.write(netlab_topology(result.lab))
    for line in differences(result.lab):
        print(f"# differs: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
