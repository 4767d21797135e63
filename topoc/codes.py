"""Every diagnostic code topoc reports, in one table, whatever stage reports it.

Each code has its default severity, its category (the stage or family of rule it
belongs to), a one-line meaning (`topoc check --list-codes` prints them), and the
templates of the messages and hints said with it (`code.message(key, **values)`,
`code.hint(key, ...)`) by lowering, the value parsers and the checks, so a code's
wording is read and reviewed here, not scattered in f-strings. (The parser's syntax
errors are composed from what the grammar expected at the error, in the parser.) Deploy's
pre-flight uses the same table. Only a warning may be switched off, per run
(`--disable CODE`) or per file (a `# topoc: disable=CODE` comment).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class Category(enum.StrEnum):
    SYNTAX = "syntax"  # the text does not parse
    VALUE = "value"  # a value of the wrong form or out of range
    NAME = "name"  # names: undefined, duplicated, unusable as an interface name
    STRUCTURE = "structure"  # statements missing, repeated or out of place
    ADDRESS = "address"  # addresses, subnets, DHCP ranges, gateways
    PLACEMENT = "placement"  # what may be plugged in where
    REACH = "reach"  # who reaches whom
    DEPLOY = "deploy"  # clashes with what the host already has
    PRAGMA = "pragma"  # the file's own `# topoc:` comments


@dataclass(frozen=True, slots=True)
class Code:
    name: str
    severity: Severity
    category: Category
    summary: str
    messages: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def message(self, key: str, **values: object) -> str:
        """The template `key` of this code, filled in."""
        return self.messages[key].format(**values)

    def hint(self, key: str, **values: object) -> str | None:
        """The template `key_hint`, filled in, if the code has one."""
        template = self.messages.get(f"{key}_hint")
        return template.format(**values) if template is not None else None


def _code(name: str, severity: Severity, category: Category, summary: str,
          **messages: str) -> Code:
    return Code(name, severity, category, summary, MappingProxyType(messages))


E, W = Severity.ERROR, Severity.WARNING

_ALL = (
    # -- front end --
    _code("syntax-error", E, Category.SYNTAX, "the text does not follow the grammar"),
    _code("too-many-errors", E, Category.SYNTAX, "the parser gave up after too many errors"),
    _code("invalid-value", E, Category.VALUE, "a value of the wrong form or out of range",
          not_name="`{text}` is not a valid {what} name",
          not_name_hint="names start with a letter or `_` and hold letters, digits, `_` and inner `-`",
          not_ifname="`{text}` is not a valid {what} name",
          not_ifname_hint="interface names hold letters, digits, `_`, `.` and `-`",
          ifname_too_long="{what} name `{text}` is {length} characters long; Linux allows at most {limit}",
          ifname_too_long_hint="shorten it to {limit} characters or fewer",
          not_ipv6="`{text}` is not an IPv6 address",
          not_ipv6_hint="write eight groups of hex digits joined by colons (`::` once for zeros), e.g. fd00::1",
          ipv6_zone="`{text}` has a zone (`%...`), which a lab address does not take",
          ipv6_zone_hint="write `{address}`: topoc puts each address on its nic",
          ipv6_zone_link_local="`{text}` has a zone (`%...`), which a lab address does not take",
          ipv6_zone_link_local_hint="give the nic an address of its network's IPv6 subnet: the kernel gives every "
                                    "interface a link-local address (fe80::/10) of its own",
          prefix_on_address="`{text}` has a prefix where a plain address belongs",
          prefix_on_address_hint="write `{address}`",
          not_ipv4="`{text}` is not an IPv4 address",
          not_ipv4_hint="write four numbers 0-255 joined by dots, e.g. 10.0.0.1",
          no_prefix="`{text}` has no prefix length",
          no_prefix_hint="write it with its prefix, e.g. `{example}`",
          bad_prefix="`/{prefix}` is not a prefix length",
          bad_prefix_hint="use a number from 0 to {longest}",
          host_bits="`{text}` has host bits set",
          host_bits_hint="the network is `{network}`",
          not_integer="`{text}` is not a valid {what}",
          not_integer_hint="use a whole number from {low} to {high}",
          not_switch="`{what}` takes `on` or `off`, not `{text}`",
          not_switch_hint="write `{what} on` or `{what} off`",
          no_unit="`{text}` has no unit",
          no_unit_hint="write a number and a unit: 512MiB, 1GiB, 2G (K, M, G, T are powers of 1024)",
          not_size="`{text}` is not a size",
          not_size_hint="write a number and a unit: 512MiB, 1GiB, 2G (K, M, G, T are powers of 1024)",
          size_range="memory of {text} is out of range",
          size_range_hint="use 1MiB to 16TiB",
          not_model="`{text}` is not a NIC model name",
          not_model_hint="use e.g. virtio, e1000e or rtl8139",
          not_domain="`{text}` is not a DNS domain name",
          not_domain_hint="use e.g. lab.example",
          not_protocol="`{text}` is not a protocol",
          not_protocol_hint="use `tcp` or `udp`",
          not_vm_port="`{text}` is not VM:PORT",
          not_vm_port_hint="write the VM and its port, e.g. `{text}:{port}`",
          not_mode="`{text}` is not a network mode",
          not_mode_hint="use one of {modes}",
          bridged_needs_nic="a bridged network needs the host NIC it bridges",
          bridged_needs_nic_hint="write `mode bridged to IFACE`, e.g. `mode bridged to eth0`",
          mode_option="mode {mode} does not take `{text}`",
          mode_option_hint="mode {mode} takes {allowed} after it",
          dhcp_needs_two="a DHCP range needs a first and a last address",
          dhcp_needs_two_hint="write `dhcp FIRST - LAST`",
          dhcp_mixed="the DHCP range runs from an {first} address to an {last} one",
          dhcp_mixed_hint="give both ends in one family; a second `dhcp` statement gives the other family's",
          family_without_address="network `{network}` has an {family} `{keyword}` but no {family} `address` "
                                 "for its server",
          family_without_address_hint="add `address {example}`: libvirt's dnsmasq answers on it",
          nat6_mode="`nat6` applies to a nat network's IPv6, and `{network}` is `mode {mode}`",
          nat6_mode_hint="remove it (a routed or open network masquerades with `masquerade`)",
          nat6_without_ipv6="`nat6` masquerades IPv6, and `{network}` has no IPv6 `address`",
          nat6_without_ipv6_hint="add `address fd00::1/64`, or remove `nat6`",
          route_families="route {destination} via {via} mixes IPv4 and IPv6",
          route_families_hint="route an {family} destination via an {family} next hop",
          empty_disk="the disk path is empty",
          empty_disk_hint="write the image's path, e.g. `disk /var/lib/libvirt/images/{vm}.qcow2`",
          disk_control="the disk path contains a control character",
          disk_control_hint="remove it from the path",
          disk_tilde="`{path}` starts with `~`, which topoc does not expand (whose home would it be?): "
                     "it is a relative path, taken from the .topo file's folder",
          disk_tilde_hint="write the absolute path, e.g. `/home/you/vm.qcow2`",
          external_on_host="external network `{network}` is not on a host: it is the LAN outside",
          external_on_host_hint="remove `on {host}`",
          not_for_external="`{keyword}` does not apply to external network `{network}`: topoc does not "
                           "manage it",
          not_for_external_hint="describe the LAN with `subnet` only, and the host's place on it with "
                                "the host's `nic`",
          not_for_bridged="`{keyword}` does not apply to bridged network `{network}`: its VMs are on the "
                          "LAN, which gives their addresses",
          not_for_bridged_hint="remove `{keyword}`; give each VM nic a LAN address instead",
          subnet_disagrees="subnet {subnet} disagrees with the address {address} (network {network})",
          subnet_disagrees_hint="drop `subnet`: a network with an address takes its subnet from it",
          dns_without_address="network `{network}` has `{keyword}` but no `address` for the DNS server",
          dns_without_address_hint="add `address IP/PREFIX`: libvirt's dnsmasq answers on it",
          dhcp_without_address="network `{network}` has DHCP but no `address` for the DHCP server",
          dhcp_without_address_hint="add `address IP/PREFIX`: libvirt's dnsmasq listens on it",
          host_nic_unnamed="a host nic needs its interface name",
          host_nic_unnamed_hint="write `nic IFACE on NETWORK address IP`, e.g. `nic eth0 on lan ...`",
          no_prefix_to_take="{address} has no prefix and network `{network}` has no address or subnet "
                            "to take one from",
          no_prefix_to_take_hint="write the prefix, e.g. `{example}`, or give `{network}` a subnet",
          no_prefix_bridged="{address} has no prefix, and bridged network `{network}` takes one from "
                            "the LAN its host's nic {nic} is on, which has no subnet here",
          no_prefix_bridged_hint="write the prefix, e.g. `{example}`, or put host {host}'s nic {nic} "
                                 "on an external network with a `subnet`",
          expect_not_ipv4="`{text}` is not an IPv4 address",
          expect_not_ipv4_hint="write four numbers 0-255 joined by dots, e.g. 10.0.0.1",
          expect_not_ipv6="`{text}` is not an IPv6 address",
          expect_not_ipv6_hint="write eight groups of hex digits joined by colons (`::` once for zeros), "
                               "e.g. fd00::1",
          not_exact_name="`{text}` cannot be a libvirt name: {problem}",
          not_exact_name_hint="write the name libvirt shows (`virsh net-list --all`, `virsh list --all`)",
          not_host_list="`on {text}` is not a list of hosts",
          not_host_list_hint="separate the hosts with commas: `on kvm1, kvm2`",
          bridged_on_hosts="bridged network `{network}` is the LAN behind one host's NIC; it cannot be on "
                           "several hosts",
          bridged_on_hosts_hint="give each host a bridged network of its own on the same LAN",
          masquerade_mode="`masquerade` needs a routed or open network, and `{network}` is `mode {mode}`",
          masquerade_mode_hint="use `mode routed` (or `mode open`) for a masqueraded network of its own",
          vni_on_one_host="`vni` applies to a network on several hosts; `{network}` is on one",
          vni_on_one_host_hint="remove `vni`, or put `{network}` on several hosts (`on kvm1, kvm2`)",
          vm_on_hosts="vm `{vm}` runs on one host",
          vm_on_hosts_hint="name one host after `on`; its nics may join networks on several hosts"),
    _code("unknown-uri-parameter", W, Category.VALUE, "a libvirt URI parameter that libvirt ignores",
          unknown="libvirt does not know the URI parameter `{name}`"),
    _code("mac-invalid", E, Category.VALUE, "a MAC address that is malformed, multicast or zero",
          not_mac="`{text}` is not a MAC address",
          not_mac_hint="write six hex bytes joined by colons, e.g. 52:54:00:12:34:56",
          all_zero="MAC {mac} is all zero",
          all_zero_hint="use e.g. 52:54:00:xx:xx:xx, or leave `mac` out to have one derived",
          multicast="MAC {mac} is a multicast address (the first octet is odd)",
          multicast_hint="a NIC needs a unicast MAC: make the first octet even, e.g. 52:54:00:xx:xx:xx"),
    _code("undefined-name", E, Category.NAME, "a name that nothing defines",
          not_a_host="`{name}` is {kind}, not a host",
          no_host="no host is named `{name}`",
          no_network="no network is named `{name}`",
          not_a_vm="`{name}` is {kind}, not a VM: a forward leads to a VM",
          no_vm="no VM is named `{name}`",
          network_in_expect="`{name}` is a network; `expect` takes nodes and addresses",
          network_in_expect_hint="name a host, VM or external on it, or an address in it",
          no_node="`{name}` is neither a node nor an IP address"),
    _code("duplicate-name", E, Category.NAME, "two things with one name",
          node="the name `{name}` is already taken by {kind} `{name}` (line {line})",
          node_hint="rename one of them; names are unique across hosts, VMs and externals",
          network="{what} `{name}` is already defined (line {line})",
          host_twice="host `{name}` is named twice after `on`",
          host_twice_hint="name each host once",
          network_hint="rename one of them",
          nic="{kind} `{node}` already has a nic named `{name}` (line {line})",
          nic_hint_unnamed="name this nic, e.g. `nic eth{index} on {network}`",
          nic_hint_first_unnamed="the nic on line {line} has no name, so it is `{name}` (eth<N>, N its "
                                 "position from 0); give each nic its own name",
          nic_hint_named="give each nic its own interface name"),
    _code("duplicate-statement", E, Category.STRUCTURE,
          "a statement that may appear once in a block appears twice",
          in_block="`{keyword}` is given twice in {kind} `{name}` (first on line {line})",
          in_block_hint="keep one of them",
          family_in_block="{kind} `{name}` has a second {family} `{keyword}` (the first is on line {line}): "
                          "it takes one of each family",
          family_in_block_hint="keep one {family} `{keyword}`; an IPv4 and an IPv6 one may stand side by side",
          family_on_nic="this nic has a second {family} `{keyword}`: it takes one of each family",
          family_on_nic_hint="keep one {family} `{keyword}`; an IPv4 and an IPv6 one may stand side by side",
          on_nic="`{keyword}` is given twice on this nic",
          on_nic_hint="keep one of them",
          lab="the lab is already named `{name}` (line {line})",
          lab_hint="a file describes one lab: keep one `lab` line"),
    _code("missing-statement", E, Category.STRUCTURE, "a block lacks a statement it needs",
          no_mode="network `{network}` has no `mode`",
          no_mode_hint="add `mode nat`, `mode routed`, `mode isolated`, `mode bridged to IFACE` or "
                       "`mode external`",
          no_subnet="external network `{network}` has no `subnet`",
          no_subnet_hint="add `subnet CIDR`, e.g. `subnet 192.168.1.0/24`",
          no_address="{mode} network `{network}` has no `address`",
          no_address_hint="add `address IP/PREFIX`: the host's address on the bridge, which the VMs "
                          "use as their gateway",
          host_nic_address="nic {iface} of host `{host}` has no address",
          host_nic_address_hint="add `address IP` (the host's address on that network)",
          external_nic_address="nic of external `{node}` has no address",
          external_nic_address_hint="add `address IP`: topoc does not model DHCP outside the host",
          no_lab="the file names no lab",
          no_lab_hint="add `lab NAME` at the top: it prefixes every object topoc creates",
          network_host="network `{network}` does not say which host it is on",
          network_host_hint_hosts="write e.g. `network {network} on {first} {{` (the hosts: {hosts})",
          network_host_hint="write `network {network} on HOST {{` and define the host with "
                            "`host HOST {{ ... }}`",
          vm_host="vm `{vm}` does not say which host it runs on",
          vm_host_hint_hosts="write e.g. `vm {vm} on {first} {{` (the hosts: {hosts})",
          vm_host_hint="write `vm {vm} on HOST {{` and define the host with `host HOST {{ ... }}`"),
    # -- checks: names --
    _code("bridge-name", E, Category.NAME,
          "a bridge name reused on one host, in libvirt's own namespace, or a host nic's",
          reserved="bridge name `{bridge}` starts with `{prefix}`, a prefix libvirt gives its own interfaces",
          reserved_hint="pick another name, e.g. `{example}`",
          reused="bridge `{bridge}` is already used on host {host} by the network on line {line}",
          reused_hint="give each network on a host its own bridge",
          nic="bridge `{bridge}` has the name of {host}'s nic",
          nic_hint="pick a bridge name no interface of the host has"),
    _code("libvirt-name-conflict", E, Category.NAME,
          "two networks, or two VMs, with one libvirt name (`name` or lab prefix)",
          taken="{what} `{name}` would be libvirt {kind} `{libvirt}`, the name of {what} `{first}` "
                "(line {line})",
          taken_hint="give each its own libvirt name: change or drop one `name`"),
    _code("mac-conflict", E, Category.ADDRESS, "two VM nics with one MAC address",
          taken="MAC {mac} is already used by {owner} (line {line})",
          taken_hint="leave `mac` out and topoc derives a unique one, or change a digit"),
    # -- checks: addresses --
    _code("address-conflict", E, Category.ADDRESS,
          "one address used twice on a segment or in a routing domain",
          taken="{address} is already assigned to {owner} (line {line})"),
    _code("address-outside-subnet", E, Category.ADDRESS, "a nic address outside its network's subnet",
          outside="{address} is outside {network}'s subnet {subnet}",
          prefix="{address} has a prefix of /{prefix}, but {network}'s subnet is {subnet}",
          prefix_hint="write the address without a prefix (it takes /{subnet_prefix} from the network)",
          no_subnet="{address} is an {family} address, but network {network} has no {family} subnet",
          no_subnet_hint="give network {network} an {family} `{keyword}` (e.g. `{keyword} {example}`), or "
                         "remove this address"),
    _code("address-reserved", E, Category.ADDRESS,
          "a subnet's network or broadcast address (IPv6: its subnet-router anycast address), a link-local "
          "or multicast IPv6 address, or a VM on the gateway's address",
          gateway="{address} is the {which} address of {subnet}, not a usable gateway address",
          gateway_hint="use a host address, e.g. {example}/{prefix}",
          nic="{address} is the {which} address of {subnet}",
          vm_on_gateway="{address} is the address of network {network} (line {line}): the host's, the "
                        "VMs' gateway",
          link_local="{address} is a link-local address (fe80::/10): the kernel gives every interface one "
                     "of its own, and it is never routed off its link",
          multicast="{address} is a multicast address (ff00::/8): the kernel refuses it as an interface's "
                    "address",
          scoped_hint="use a global or unique local address, e.g. {example}"),
    _code("reserved-anycast", W, Category.ADDRESS,
          "an IPv6 address among its subnet's reserved subnet anycast addresses (RFC 2526)",
          reserved="{address} is one of the 128 reserved subnet anycast addresses of {subnet} ({first} - "
                   "{last}, RFC 2526): a node there may take it as an anycast address of its own",
          reserved_hint="{free}; RFC 2526 keeps these for subnet anycast"),
    _code("subnet-overlap", E, Category.ADDRESS,
          "overlapping subnets of a family on one host (libvirt fails at net-start; in IPv6 the host's "
          "routes clash)",
          refused="{subnet} of network `{network}` overlaps {other}, the subnet of {what}; libvirt "
                  "refuses to start it (\"Network is already in use by interface\")",
          refused_hint="give it a subnet of its own",
          isolated_reuses="isolated network `{network}` reuses {subnet}, the subnet of {what}: its VMs "
                          "cannot reach that {side}, even at the same addresses",
          overlaps_isolated="{subnet} of network `{network}` overlaps {other}, the subnet of {what}, an "
                            "isolated network without address: its VMs cannot reach this one, even at "
                            "the same addresses",
          separated_hint="give it a subnet of its own, unless the separation is the point",
          ambiguous="{subnet} of network `{network}` overlaps {other}, the subnet of {what}: the host "
                    "gets a route to it on each side and sends through one only (libvirt checks "
                    "overlaps of IPv4 subnets only)",
          ambiguous_hint="give it a subnet of its own"),
    _code("dhcp-range", E, Category.ADDRESS,
          "a DHCP range that is reversed, outside its subnet, too large for libvirt, on an IPv6 prefix under /64, "
          "covers the gateway or a static address",
          reversed="the DHCP range starts at {start}, after its end {end}",
          reversed_hint="write `dhcp {end} - {start}`",
          outside="the DHCP range leaves {network}'s subnet {subnet} at {address}",
          outside_hint="keep both ends inside {subnet}",
          reserved="the DHCP range includes the network or broadcast address of {subnet}",
          reserved_hint="start it after the network address and end it before the broadcast address",
          gateway="the DHCP range {start} - {end} covers the gateway {gateway}",
          gateway_hint="move the range past the gateway address",
          static_inside="{address} is inside {network}'s DHCP range {start} - {end} (line {line})",
          static_inside_hint="dnsmasq keeps it for this VM's MAC, but a pool address is easy to hand out "
                             "twice by hand: pick one outside the range",
          static_inside6="{address} is inside {network}'s DHCPv6 range {start} - {end} (line {line})",
          static_inside6_hint="libvirt cannot reserve an IPv6 address for a MAC, so dnsmasq may lease it "
                              "to another guest: pick one outside the range",
          anycast="the DHCPv6 range starts at {start}, the subnet-router anycast address of {subnet}",
          anycast_hint="write `dhcp {after} - {end}`: start after the subnet-router anycast address",
          too_large="the DHCP range {start} - {end} holds more than 65,535 addresses: libvirt refuses it "
                    "(\"range ... is too large\")",
          too_large_hint="write `dhcp {start} - {limit}`",
          short_prefix="network {network}'s DHCPv6 range is in a /{prefix}: dnsmasq refuses a DHCPv6 "
                       "range on a prefix shorter than /64 (\"prefix length must be at least 64\"), so the "
                       "network does not start",
          short_prefix_hint="give network {network} a /64 (or longer) IPv6 address, e.g. {example}"),
    _code("gateway-unreachable", E, Category.ADDRESS,
          "a gateway or `route ... via` not on any subnet of the node",
          gateway="gateway {gateway} of {where} is on none of its subnets ({subnets})",
          gateway_hint_network="use {gateway}, the address of network {network}, or leave `gateway` out",
          gateway_hint_subnet="use a router's address in {subnet}",
          gateway_hint="use a router's address on the nic's subnet",
          route="route via {via}: {node} has no subnet holding {via} ({subnets}), so the kernel "
                "refuses the route",
          route_hint="route via an address on one of the node's own subnets"),
    _code("slaac-prefix", W, Category.ADDRESS,
          "an IPv6 network that offers SLAAC on a prefix other than /64, where SLAAC forms no address",
          not_64="network `{network}` offers its VMs SLAAC (libvirt's dnsmasq: `dhcp-range={address},"
                 "ra-only`), and SLAAC forms addresses only in a /64, not a /{prefix}: {vm} ({nic}) gets "
                 "no IPv6 address",
          not_64_hint="write `address {suggested}`, or give {vm} a static IPv6 address or the network a "
                      "DHCPv6 range"),
    _code("no-address", W, Category.ADDRESS, "a VM nic with no address on a network without DHCP",
          cut_off="nic {nic} of VM {vm} has no address, and network {network} has no DHCP: the VM is "
                  "cut off there",
          cut_off_hint="add `address IP` to the nic ({free}){dhcp}"),
    # -- checks: placement --
    _code("nic-placement", E, Category.PLACEMENT, "a nic on a network its node cannot be plugged into",
          other_host="VM {vm} runs on {host}, but network {network} is on {network_host}: a libvirt "
                     "network lives on one host",
          other_host_hint="run the VM there (`vm {vm} on {network_host}`), or put this nic on a network "
                          "of {host}",
          lan_without_host_nic="VM {vm} is on the LAN {network} directly (a macvtap on its host's NIC "
                               "there), but {host} has no nic on {network}",
          lan_without_host_nic_hint="give host {host} a nic on {network}, or use a bridged network",
          inside_host="{what} {node} cannot plug into {model} network {network}: it lives inside host "
                      "{network_host}",
          inside_host_hint_host="the host's address on it is the network's `address`",
          inside_host_hint="put {node} on an external network; it reaches the VMs through the host"),
    _code("forward-target", W, Category.PLACEMENT,
          "a `forward` to a VM with no static address the host can DNAT to",
          no_target="{vm} has no static address on a nat, routed or open network of its host, "
                    "so no DNAT rule is generated and port {port} stays closed",
          no_target_hint="give {vm} a static `address` on such a network"),
    # -- checks: networks on several hosts --
    _code("no-underlay", E, Category.PLACEMENT,
          "the hosts of a network on several hosts share no external network to tunnel over",
          network="network `{network}` is on hosts {hosts}, which have no external network in common "
                  "to carry its VXLAN tunnel",
          network_hint="give every one of them a nic with an address on one external network "
                       "(`nic eth0 on lan address ...`)"),
    _code("vni-conflict", E, Category.NAME, "two networks on several hosts with one VXLAN id",
          taken="network `{network}` has VXLAN id {vni}, already that of `{first}` (line {line})",
          taken_hint="give one of them another `vni N` (1-16777215)"),
    _code("vxlan-mtu", W, Category.VALUE,
          "a network on several hosts whose MTU leaves no room for VXLAN's 50 bytes",
          no_room="network `{network}` has MTU {mtu}; with VXLAN's {overhead} bytes its frames need an "
                  "underlay MTU of {needed}, more than {what}",
          no_room_hint="set `mtu {fits}`, or give the hosts' LAN a larger MTU (`mtu N` on the external "
                       "network, if it carries jumbo frames)"),
    # -- checks: reachability --
    _code("unreachable-segment", W, Category.REACH,
          "a network nobody can reach, or whose LAN peers get no replies",
          empty="network `{network}` has no VM on it",
          empty_hint="attach a VM with `nic on {network}`, or remove the network",
          cut_off="nothing can reach isolated network `{network}`: it has no address (so the host is "
                  "not on it) and fewer than two VMs with an address",
          cut_off_hint="give it an `address` to make it host-only, or put a second VM on it",
          no_replies="{model} network `{network}` ({subnet}) gets no replies from {peers}: {failure} "
                     "(tried {vm} {address})",
          no_replies_fix="or use `mode nat` if the LAN need not reach the VMs",
          no_replies_fix_nat6="or add `nat6 on` to `{network}` if the LAN need not reach the VMs over IPv6",
          no_replies_fix_routed6="or use `mode nat` with `nat6 on` if the LAN need not reach the VMs"),
    _code("expect-failed", E, Category.REACH, "an `expect` the model contradicts",
          no_owner="{said}: no node has the address {src}",
          no_owner_hint="name a node, or an address one of them has",
          no_address="{said} does not hold: {dst} has no address",
          no_address_hint="give {dst} a static `address`: topoc does not predict DHCP leases",
          unreachable="{said} does not hold: {failure}",
          reachable="{said} does not hold: {src} gets replies from {dst} ({path})",
          reachable_hint="it is reachable, hop by hop:\n{story}"),
    _code("conflicting-statements", E, Category.STRUCTURE,
          "two statements of a block that cannot go together"),
    # -- deploy's pre-flight --
    _code("image-missing", E, Category.DEPLOY,
          "a VM's image, kernel or initrd is not a file topoc can read"),
    _code("remote-host-firewall", E, Category.DEPLOY,
          "rules for a remote host's firewall that deploy cannot apply there"),
    _code("no-such-pool", E, Category.DEPLOY, "a storage pool that the connection does not have"),
    _code("foreign-object", E, Category.DEPLOY,
          "the host has a libvirt object of that name that this lab did not create"),
    _code("host-bridge-clash", E, Category.DEPLOY,
          "a bridge another libvirt network or a host interface already uses"),
    _code("host-subnet-clash", E, Category.DEPLOY,
          "a subnet that overlaps one of another libvirt network or host interface"),
    _code("host-bridge-missing", E, Category.DEPLOY,
          "a bridged network's host bridge does not exist on the connection"),
    # -- limits of the kernel, libvirt and nftables (topoc.checks.limits) --
    _code("name-too-long", E, Category.NAME,
          "a name topoc derives (libvirt object, nft table, state folder) is over its limit",
          table="the nftables table name `{name}` is {length} bytes long; nftables names allow at most {limit}",
          table_hint="shorten the lab's name (every derived name starts with it): at most {characters} characters",
          folder="up.sh's state folder for host {host} `{name}` is {length} bytes long; file names allow at "
                 "most {limit}",
          folder_hint="shorten the lab's name (every derived name starts with it) or the host's: "
                      "`<lab>-<host>` must fit {limit} bytes",
          network="the libvirt network name `{name}` is {length} bytes long; libvirt's file names for it "
                  "(NAME.hostsfile) allow at most {limit}",
          network_hint="shorten the lab's name (every derived name starts with it) or the network's: "
                       "`<lab>-<network>` must fit {limit} bytes",
          domain="the libvirt domain name `{name}` is {length} bytes long; libvirt's file names for it "
                 "(NAME.xml) allow at most {limit}",
          domain_hint="shorten the lab's name (every derived name starts with it) or the VM's: `<lab>-<vm>` "
                      "must fit {limit} bytes"),
    _code("bridge-ports", E, Category.PLACEMENT, "more ports on one bridge than a Linux bridge holds",
          too_many="network `{network}` puts {count:,} ports on bridge {bridge}; a Linux bridge holds at most "
                   "{limit:,} (the kernel refuses the next with \"Exchange full\")",
          too_many_hint="split its VMs over two or more networks of at most {limit:,} ports each"),
    _code("uplink-missing", E, Category.PLACEMENT,
          "a network's `via` or `bridged to` names a nic its host does not have",
          enslaved="host {host} has no nic `{via}`, which network `{network}` it enslaves "
                   "(`mode bridged to {via}`)",
          forwarded="host {host} has no nic `{via}`, which network `{network}` it forwards through "
                    "(`mode {mode} via {via}`)",
          meant_hint="write `mode {written} {meant}` (host {host}'s nics: {shown}), or give host {host} a "
                     "`nic {via} on NETWORK address IP`",
          unplaced_hint="host {host}'s nics are {shown}; if it has {via} without an address (a bridge port), "
                        "make sure the host has it: up.sh and deploy check",
          no_nics_hint="host {host} declares no nic: give it a `nic {via} on NETWORK address IP`"),
    _code("bridge-virbr", W, Category.NAME,
          "a bridge named virbr<N>, a name libvirt may give one of its own networks",
          auto="bridge `{bridge}` is a name libvirt gives the networks it names itself (virbr0, virbr1, "
               "...): one defined later outside this lab may take the same bridge",
          auto_hint="fine if you manage every network of the host; else a name without digits after `virbr` "
                    "(e.g. `virbrlab`) or one of your own cannot collide"),
    _code("domain-without-dns", W, Category.VALUE, "a network's `domain` has no effect without `dns on`",
          no_dns="network `{network}` has `domain {domain}` but no `dns on`: libvirt writes <dns "
                 "enable='no'/> and nothing answers for the domain, so it has no effect",
          no_dns_hint="add `dns on` to `{network}`, or remove `domain`"),
    _code("no-router-advertisement", W, Category.REACH,
          "a VM's IPv6 default route would come from router advertisements that nothing sends",
          quiet="vm `{vm}` gets no IPv6 default route: libvirt runs no dnsmasq for `{network}` (no `dhcp`, "
                "no `dns on`), so nothing advertises a router on it",
          quiet_hint="add `dns on` to `{network}` (its dnsmasq then advertises the network as the router), or "
                     "`gateway {router}` on the nic"),
    # -- the file's pragmas --
    _code("bad-pragma", W, Category.PRAGMA,
          "a `# topoc: disable=` comment naming an unknown code or an error",
          unknown="`{name}` is not a diagnostic code",
          unknown_hint="`topoc check --list-codes` lists them",
          error="`{name}` is an error; only warnings can be disabled",
          error_hint="fix what it reports instead"),
)

CODES: Mapping[str, Code] = MappingProxyType({c.name: c for c in _ALL})
assert len(CODES) == len(_ALL), "a code is listed twice"

SYNTAX_ERROR = CODES["syntax-error"]
TOO_MANY_ERRORS = CODES["too-many-errors"]
INVALID_VALUE = CODES["invalid-value"]
MAC_INVALID = CODES["mac-invalid"]
UNDEFINED_NAME = CODES["undefined-name"]
DUPLICATE_NAME = CODES["duplicate-name"]
DUPLICATE_STATEMENT = CODES["duplicate-statement"]
MISSING_STATEMENT = CODES["missing-statement"]
BRIDGE_NAME = CODES["bridge-name"]
MAC_CONFLICT = CODES["mac-conflict"]
ADDRESS_CONFLICT = CODES["address-conflict"]
ADDRESS_OUTSIDE_SUBNET = CODES["address-outside-subnet"]
ADDRESS_RESERVED = CODES["address-reserved"]
SUBNET_OVERLAP = CODES["subnet-overlap"]
DHCP_RANGE = CODES["dhcp-range"]
RESERVED_ANYCAST = CODES["reserved-anycast"]
SLAAC_PREFIX = CODES["slaac-prefix"]
GATEWAY_UNREACHABLE = CODES["gateway-unreachable"]
NO_ADDRESS = CODES["no-address"]
NIC_PLACEMENT = CODES["nic-placement"]
FORWARD_TARGET = CODES["forward-target"]
UNREACHABLE_SEGMENT = CODES["unreachable-segment"]
EXPECT_FAILED = CODES["expect-failed"]
FOREIGN_OBJECT = CODES["foreign-object"]
HOST_BRIDGE_CLASH = CODES["host-bridge-clash"]
HOST_SUBNET_CLASH = CODES["host-subnet-clash"]
HOST_BRIDGE_MISSING = CODES["host-bridge-missing"]
BAD_PRAGMA = CODES["bad-pragma"]
LIBVIRT_NAME_CONFLICT = CODES["libvirt-name-conflict"]
NO_UNDERLAY = CODES["no-underlay"]
VNI_CONFLICT = CODES["vni-conflict"]
VXLAN_MTU = CODES["vxlan-mtu"]
UNKNOWN_URI_PARAMETER = CODES["unknown-uri-parameter"]
CONFLICTING_STATEMENTS = CODES["conflicting-statements"]
IMAGE_MISSING = CODES["image-missing"]
REMOTE_HOST_FIREWALL = CODES["remote-host-firewall"]
NO_SUCH_POOL = CODES["no-such-pool"]


def register(name: str, severity: Severity, summary: str) -> Code:
    """The code `name` from the table above. A code is added there, with its category
    and meaning, never registered from elsewhere: this refuses a name it does not list."""
    code = CODES.get(name)
    if code is None or code.severity is not severity:
        raise ValueError(f"diagnostic code {name!r} ({severity}) is not in topoc/codes.py: add it there")
    return code


class DisableError(ValueError):
    """A code that cannot be switched off: unknown, or an error."""


def disabled_codes(names: list[str] | tuple[str, ...]) -> frozenset[str]:
    """The codes to switch off for a run; only warnings may be (DisableError otherwise)."""
    for name in names:
        code = CODES.get(name)
        if code is None:
            raise DisableError(f"`{name}` is not a diagnostic code (topoc check --list-codes lists them)")
        if code.severity is not Severity.WARNING:
            raise DisableError(f"`{name}` is an error; only warnings can be disabled")
    return frozenset(names)
