"""The statements of the language, as one table: each one's keyword, where it may
appear, whether a block may hold it more than once, its usage line and the kinds of
value it takes.

The parser reads it for its hints (usage lines, "`mode` belongs inside a `network`
block"), lowering for its duplicate-statement rule, the README's reference follows it.
The grammar (grammar/topo.lark) fixes each statement's shape for the LALR parser;
topoc.front.lower has one function per statement that turns its values into IR.
Adding a statement: a grammar rule, one entry here, one function in lower.py.
"""

from __future__ import annotations

from dataclasses import dataclass

TOP = "top"  # the file's top level, outside any block
BLOCKS = ("network", "host", "vm", "external")  # the statements that open a block


@dataclass(frozen=True, slots=True)
class Shape:
    keyword: str
    homes: tuple[str, ...]  # TOP and/or the blocks it may appear in
    single: bool  # at most once in its block
    usage: str
    values: tuple[str, ...] = ()  # the kinds of value it takes, in order
    # Once per address family (an IPv4 and an IPv6 one may stand side by side): `single`
    # then holds per family, told apart by the value's form (topoc.model.family).
    per_family: bool = False

    @property
    def opens_block(self) -> bool:
        return self.keyword in BLOCKS


_NODE_BLOCKS = ("host", "vm", "external")

STATEMENTS: dict[str, Shape] = {s.keyword: s for s in (
    Shape("lab", (TOP,), True, "lab NAME", ("name",)),
    Shape("network", (TOP,), False, "network NAME [on HOST[, HOST...]] { ... }", ("name", "hosts")),
    Shape("host", (TOP,), False, "host NAME { ... }", ("name",)),
    Shape("vm", (TOP,), False, "vm NAME on HOST { ... }", ("name", "host")),
    Shape("external", (TOP,), False, "external NAME { ... }", ("name",)),
    Shape("mode", ("network",), True,
          "mode isolated | routed [via IFACE] | nat [via IFACE] | bridged to IFACE | open [via IFACE] | external",
          ("mode", "interface")),
    Shape("bridge", ("network",), True, "bridge IFNAME", ("interface",)),
    Shape("address", ("network",), True, "address IP/PREFIX   (one IPv4, one IPv6)", ("interface-address",),
          per_family=True),
    Shape("subnet", ("network",), True, "subnet CIDR   (one IPv4, one IPv6)", ("cidr",), per_family=True),
    Shape("dhcp", ("network",), True, "dhcp FIRST-IP - LAST-IP   (one IPv4, one IPv6)", ("address", "address"),
          per_family=True),
    Shape("dns", ("network",), True, "dns on|off", ("switch",)),
    Shape("domain", ("network",), True, "domain NAME", ("domain",)),
    Shape("mtu", ("network",), True, "mtu N", ("integer",)),
    Shape("stp", ("network",), True, "stp on|off", ("switch",)),
    Shape("masquerade", ("network",), True, "masquerade [on|off]   (routed or open networks)",
          ("switch",)),
    Shape("nat6", ("network",), True,
          "nat6 on|off   (a nat network's IPv6: masqueraded when on, routed when off, the default)",
          ("switch",)),
    Shape("vni", ("network",), True, "vni N   (1-16777215: the VXLAN id of a network on several hosts)",
          ("integer",)),
    Shape("name", ("network", "vm"), True,
          "name LIBVIRT-NAME   (the network's or VM's libvirt name as is, without the lab prefix)",
          ("libvirt-name",)),
    Shape("connect", ("host",), True,
          "connect URI   (a libvirt URI: qemu:///system, qemu+ssh://root@HOST/system)", ("uri",)),
    Shape("nic", _NODE_BLOCKS, False,
          "nic [IFACE] on NETWORK [address IP[/PREFIX]] [mac MAC] [model NAME] [gateway IP]   "
          "(address and gateway: one IPv4, one IPv6)",
          ("interface", "network", "address", "mac", "model", "address")),
    Shape("route", _NODE_BLOCKS, False, "route CIDR via IP   (or: route default via IP)",
          ("cidr", "address")),
    Shape("memory", ("vm",), True, "memory SIZE   (512MiB, 1GiB, 2G)", ("size",)),
    Shape("vcpus", ("vm",), True, "vcpus N", ("integer",)),
    Shape("disk", ("vm",), True, 'disk PATH   (or: disk "a path with spaces")', ("path",)),
    Shape("image", ("vm",), True,
          "image PATH   (a base image, qcow2 or raw: topoc boots a copy-on-write overlay of it)", ("path",)),
    Shape("kernel", ("vm",), True, "kernel PATH   (direct kernel boot)", ("path",)),
    Shape("initrd", ("vm",), True, "initrd PATH   (with `kernel`)", ("path",)),
    Shape("cmdline", ("vm",), True, 'cmdline "TEXT"   (with `kernel`, e.g. cmdline "console=ttyS0")', ("string",)),
    Shape("user", ("vm",), True, "user NAME   (a login user cloud-init creates in the guest)", ("name",)),
    Shape("ssh-key", ("vm",), False, 'ssh-key "ssh-ed25519 AAAA... comment"', ("string",)),
    Shape("ssh-key-file", ("vm",), False, "ssh-key-file PATH   (e.g. ~/.ssh/id_ed25519.pub)", ("path",)),
    Shape("forward", (TOP,), False, "forward tcp|udp PORT to VM:PORT", ("protocol", "integer", "vm-port")),
    Shape("expect", (TOP,), False, "expect A -> B   (or: expect A !-> B)", ("node-or-address", "node-or-address")),
)}


def _where(homes: tuple[str, ...]) -> str:
    named = [f"`{h}`" for h in homes]
    joined = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
    return f"a {joined}"


USAGE: dict[str, str] = {k: s.usage for k, s in STATEMENTS.items()}
TOP_LEVEL_KEYWORDS = tuple(k for k, s in STATEMENTS.items() if TOP in s.homes)
# Where each statement of a block belongs, for a statement written in the wrong place.
STATEMENT_HOME: dict[str, str] = {k: _where(s.homes) for k, s in STATEMENTS.items() if TOP not in s.homes}
SINGLE = frozenset(k for k, s in STATEMENTS.items() if s.single and TOP not in s.homes)
PER_FAMILY = frozenset(k for k, s in STATEMENTS.items() if s.per_family)
# The nic options that a nic takes once per family (the others once).
NIC_OPTIONS_PER_FAMILY = frozenset(("address", "gateway"))


def allowed_in(block: str) -> frozenset[str]:
    """The statements a block of this kind may hold."""
    return frozenset(k for k, s in STATEMENTS.items() if block in s.homes)
