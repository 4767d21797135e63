"""Limit checks: what the kernel, libvirt or nftables would refuse only when the lab is
applied, found up front. Every name topoc derives from the lab's names fits its limit,
a bridge holds at most as many ports as Linux allows, a network's `via` is a nic its
host has; and two settings that would be silently ignored (a `virbr<N>` bridge libvirt
may hand out itself, a `domain` without DNS) are warnings."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from topoc.checks.common import at
from topoc.checks.registry import Finding, check
from topoc.codes import CODES
from topoc.diagnostics import Severity
from topoc.front.span import Span
from topoc.model import naming
from topoc.model.analysis import Analysis
from topoc.model.family import family_of
from topoc.model.ir import Host, Lab, Mode, Network

NAME_TOO_LONG = CODES["name-too-long"]
BRIDGE_PORTS = CODES["bridge-ports"]
UPLINK_MISSING = CODES["uplink-missing"]
BRIDGE_VIRBR = CODES["bridge-virbr"]
DOMAIN_WITHOUT_DNS = CODES["domain-without-dns"]

# NAME_MAX: one component of a path (a file name) holds at most 255 bytes (limits.h).
NAME_MAX = 255
# libvirt stores a network as NAME.xml and gives its dnsmasq NAME.conf, NAME.hostsfile and
# NAME.addnhosts (src/util/virdnsmasq.c, DNSMASQ_HOSTSFILE_SUFFIX "hostsfile"): the
# longest suffix, ".hostsfile", leaves 245 bytes for the name.
LIBVIRT_NETWORK_NAME_MAX = NAME_MAX - len(".hostsfile")
# A domain is stored as NAME.xml and logs to NAME.log (/var/log/libvirt/qemu).
LIBVIRT_DOMAIN_NAME_MAX = NAME_MAX - len(".xml")
# nftables names (tables, chains) hold NFT_NAME_MAXLEN 256 bytes with the NUL
# (include/uapi/linux/netfilter/nf_tables.h).
NFT_NAME_MAX = 255
# A Linux bridge numbers its ports 1..BR_MAX_PORTS-1: BR_MAX_PORTS is 1 << BR_PORT_BITS,
# 1024 (net/bridge/br_private.h), and port 0 is reserved (find_portno in net/bridge/br_if.c,
# which returns -EXFULL, "Exchange full", past it): 1,023 ports.
BRIDGE_MAX_PORTS = (1 << 10) - 1

# The names libvirt makes up for a network's bridge when none is given: virbr0, virbr1,
# ... ("a bridge name beginning with the prefix "virbr" is recommended (and that is what
# is auto-generated), but not enforced", https://libvirt.org/formatnetwork.html#connectivity).
_LIBVIRT_AUTO_BRIDGE = re.compile(r"virbr[0-9]+")


def _header(net: Network) -> Span:
    """The `network` keyword of the network's block."""
    return net.span.sub(0, len("network"))


def _too_long(key: str, name: str, limit: int, **values: object) -> tuple[str, str]:
    """The message and hint of NAME_TOO_LONG's `key`: the name cut at 40 characters."""
    shown = f"{name[:40]}{'...' if len(name) > 40 else ''}"
    return (NAME_TOO_LONG.message(key, name=shown, length=len(name.encode()), limit=limit, **values),
            NAME_TOO_LONG.message(f"{key}_hint", limit=limit, **values))


@check(NAME_TOO_LONG)
def derived_names(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    lab_span = lab.span
    table = naming.nft_table(lab.name)
    if len(table.encode()) > NFT_NAME_MAX:
        yield Finding(lab_span, *_too_long("table", table, NFT_NAME_MAX, characters=NFT_NAME_MAX - len("topoc_")))
    for host in lab.hosts:
        folder = naming.state_folder(lab.name, host.name).rsplit("/", 1)[1]
        if len(folder.encode()) > NAME_MAX:
            yield Finding(lab_span, *_too_long("folder", folder, NAME_MAX, host=host.name))
    for net in lab.networks:
        name = naming.libvirt_name(lab.name, net.name, net.exact_name)
        if net.managed and len(name.encode()) > LIBVIRT_NETWORK_NAME_MAX:
            yield Finding(_header(net), *_too_long("network", name, LIBVIRT_NETWORK_NAME_MAX))
    for vm in lab.vms:
        name = naming.libvirt_name(lab.name, vm.name, vm.exact_name)
        if len(name.encode()) > LIBVIRT_DOMAIN_NAME_MAX:
            yield Finding(vm.span.sub(0, len("vm")), *_too_long("domain", name, LIBVIRT_DOMAIN_NAME_MAX))


@check(BRIDGE_PORTS)
def bridge_ports(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    """A network's bridge on its host takes one port per VM nic on it (a tap), and a
    bridged network's bridge also the host nic it enslaves."""
    ports: Counter[str] = Counter()
    for vm in lab.vms:
        for nic in vm.nics:
            ports[nic.network] += 1
    for net in lab.networks:
        if not net.managed or not an.sound(net.name):
            continue
        count = ports[net.name] + (1 if net.mode is Mode.BRIDGED and net.via else 0)
        if count > BRIDGE_MAX_PORTS:
            values = dict(network=net.name, count=count, bridge=net.bridge, limit=BRIDGE_MAX_PORTS)
            yield Finding(_header(net), BRIDGE_PORTS.message("too_many", **values),
                          BRIDGE_PORTS.message("too_many_hint", **values))


def _via_span(net: Network) -> Span:
    """The nic's token at the end of the `mode ... via|to NIC` statement."""
    span = net.mode_span
    if net.via is None or span.line != span.end_line or span.end_column - len(net.via) < span.column:
        return _header(net)
    return Span(span.file, span.line, span.end_column - len(net.via), span.line, span.end_column)


def _lan_nic(lab: Lab, host: Host, net: Network) -> str | None:
    """The host's nic on the LAN a bridged network's VMs have their addresses in: the
    nic `bridged to` must name (None when no VM address tells the LAN)."""
    lans = {n.name: n for n in lab.networks if n.mode is Mode.EXTERNAL and n.families}
    for vm in lab.vms:
        for nic in vm.nics:
            if nic.network != net.name:
                continue
            for address in nic.addresses:  # IPv4 first
                for own in host.nics:
                    lan = lans.get(own.network)
                    subnet = lan.subnet_in(family_of(address)) if lan is not None else None
                    if subnet is not None and address.ip in subnet:
                        return own.name
    return None


@check(UPLINK_MISSING)
def uplink_missing(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    """A `via` names a nic of the host, which a host block declares with its address. A
    nic a bridge enslaves (or an unnumbered uplink) may have no address of its own, and a
    host block cannot declare such a nic: so an undeclared nic is an error when the
    bridged VMs' addresses show which nic it should be (the host's nic on their LAN),
    else a warning (up.sh and the deploy pre-flight check the real host)."""
    hosts = {h.name: h for h in lab.hosts}
    for net in lab.networks:
        host = hosts.get(net.host or "")
        if net.via is None or host is None or not an.sound(net.name, host.name):
            continue
        nics = sorted(n.name for n in host.nics)
        if net.via in nics:
            continue
        written = "bridged to" if net.mode is Mode.BRIDGED else f"{net.mode.value} via"
        shown = ", ".join(f"`{n}`" for n in nics)
        # An error only where the file shows which nic was meant: the host's nic on the
        # LAN of the bridged VMs' addresses. Otherwise the nic may be one the host has
        # without an address (a bridge port, an unnumbered uplink), which a host block
        # cannot declare: a warning.
        meant = _lan_nic(lab, host, net) if net.mode is Mode.BRIDGED else None
        severity = None if meant is not None else Severity.WARNING
        if meant is None and net.mode is not Mode.BRIDGED and nics:
            meant = nics[0]
        values = dict(host=host.name, via=net.via, network=net.name, mode=net.mode.value, written=written,
                      meant=meant, shown=shown)
        hint = UPLINK_MISSING.message("meant_hint" if meant is not None else "unplaced_hint" if nics
                                      else "no_nics_hint", **values)
        key = "enslaved" if net.mode is Mode.BRIDGED else "forwarded"
        yield Finding(_via_span(net), UPLINK_MISSING.message(key, **values), hint, severity)


@check(BRIDGE_VIRBR)
def virbr_bridge(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for net in lab.networks:
        # Not a network that exists already (`name`): libvirt named its virbrN itself.
        if net.managed and net.bridge and not net.bridge_derived and net.exact_name is None \
                and _LIBVIRT_AUTO_BRIDGE.fullmatch(net.bridge):
            yield Finding(at(net.bridge_span, net.span), BRIDGE_VIRBR.message("auto", bridge=net.bridge),
                          BRIDGE_VIRBR.message("auto_hint"))


@check(DOMAIN_WITHOUT_DNS)
def domain_without_dns(an: Analysis) -> Iterator[Finding]:
    lab = an.lab
    for net in lab.networks:
        if net.domain is not None and not net.dns and net.mode not in (Mode.EXTERNAL, Mode.BRIDGED):
            yield Finding(_header(net), DOMAIN_WITHOUT_DNS.message("no_dns", network=net.name, domain=net.domain),
                          DOMAIN_WITHOUT_DNS.message("no_dns_hint", network=net.name))
