"""The platform profile: what is libvirt's or the hypervisor's, not the lab's.

One frozen value holds the facts topoc relies on about the platform a lab runs on:
the domain type QEMU is driven with, which network modes libvirt
firewalls and which turn on ip_forward (and IPv6 forwarding), which give guests a
default route (DHCP's router option, IPv6 router advertisements), the names libvirt keeps for itself. Every
stage that needs such a fact reads it from a `Profile` (by default DEFAULT_PROFILE);
a different platform is `dataclasses.replace(DEFAULT_PROFILE, ...)`, e.g. a host
without usable KVM: `replace(DEFAULT_PROFILE, domain_type="qemu")` (TCG).

The profile describes libvirt 9.x on Linux (Debian 12 ships 9.0) with QEMU/KVM, as
documented by https://libvirt.org/formatnetwork.html#connectivity,
https://libvirt.org/formatdomain.html and https://libvirt.org/firewall.html. The rules
libvirt's firewall installs for each network mode are in topoc.model.firewall.
"""

from __future__ import annotations

from dataclasses import dataclass

from topoc.model.ir import Mode, Network


@dataclass(frozen=True, slots=True)
class Profile:
    """The platform facts of one kind of host. Frozen: change a field with replace()."""

    # Which libvirt this describes (for the reader and for reports).
    libvirt: str = "9.x"
    # <domain type=...>: "kvm" (hardware virtualization) or "qemu" (TCG, emulation)
    # where the host has no usable KVM. https://libvirt.org/formatdomain.html#element-and-attribute-overview
    domain_type: str = "kvm"
    # Networks whose bridge gets libvirt's FWX/FWI/FWO rules: no <forward> (isolated,
    # host-only), mode='nat' and mode='route'; mode='open' and mode='bridge' get none.
    # https://libvirt.org/formatnetwork.html#connectivity ("open": "libvirt does not
    # add any firewall rules"); libvirt's src/network/network_iptables.c
    # (iptablesAddGeneralIPv4FirewallRules, iptablesAddIPSpecificFirewallRules).
    firewalled_modes: tuple[Mode, ...] = (Mode.ISOLATED, Mode.NAT, Mode.ROUTED)
    # Networks libvirt masquerades (LIBVIRT_PRT): mode='nat' only.
    masqueraded_modes: tuple[Mode, ...] = (Mode.NAT,)
    # Networks for which libvirt turns on net.ipv4.ip_forward when it starts them.
    forwarding_modes: tuple[Mode, ...] = (Mode.NAT, Mode.ROUTED, Mode.OPEN)
    # Modes whose <forward> may name the uplink device. libvirt refuses `dev` with
    # mode='open' ("forward dev not allowed"), and for mode='bridge' a `dev` would mean
    # macvtap, not the host bridge. https://libvirt.org/formatnetwork.html#connectivity
    forward_dev_modes: tuple[Mode, ...] = (Mode.NAT, Mode.ROUTED)
    # Networks whose dnsmasq hands out the bridge address as the router (DHCP option 3).
    # Not isolated (host-only) ones: for a network without <forward>, libvirt writes an
    # empty `dhcp-option=3` into dnsmasq's configuration, so guests get no default route
    # there and reach only the host's address on that bridge, not its other addresses.
    dhcp_router_modes: tuple[Mode, ...] = (Mode.NAT, Mode.ROUTED, Mode.OPEN)
    # Networks with an IPv6 address whose dnsmasq router advertisements give guests a
    # default route (via the bridge's link-local address; router lifetime 1800 s). Not
    # isolated ones: libvirt writes `ra-param=*,0,0` for a network without <forward>, a
    # router lifetime of 0, "which allows a router to advertise prefixes but not a route
    # via itself" (dnsmasq(8); libvirt 9.0 bridge_driver.c networkDnsmasqConfContents).
    ra_router_modes: tuple[Mode, ...] = (Mode.NAT, Mode.ROUTED, Mode.OPEN)
    # IPv6 forwarding: libvirt writes net.ipv6.conf.all.forwarding=1 for a network of
    # forwarding_modes only when it has an IPv6 address (networkEnableIPForwarding(v4present,
    # v6present), bridge_driver.c); a nat network routes its IPv6 unless <nat ipv6='yes'/>
    # (networkAddIPSpecificFirewallRules): topoc.model.firewall holds those rules.
    # Networks libvirt installs with its own definitions (`default`, virbr0,
    # 192.168.122.0/24 on most distributions); a lab never names a libvirt object so.
    reserved_networks: tuple[str, ...] = ("default",)
    # Prefixes libvirt gives its own interfaces (taps vnetN, macvtapN, macvlanN, Xen's
    # vifN, auto bridges virbrN); a lab's bridges and taps must not use them.
    # https://libvirt.org/formatdomain.html#virtual-network
    # (Not `virbr`: libvirt recommends it for bridges, "but not enforced",
    # https://libvirt.org/formatnetwork.html#connectivity; topoc.checks.limits warns
    # about the virbr<N> names libvirt hands out itself.)
    reserved_prefixes: tuple[str, ...] = ("vnet", "macvtap", "macvlan", "vif")
    # The source ports libvirt's masquerade maps TCP and UDP to (iptables' MASQUERADE
    # --to-ports 1024-65535), so no guest gets a privileged port on the wire.
    masquerade_ports: tuple[int, int] = (1024, 65535)


    def runs_dnsmasq(self, network: Network) -> bool:
        """Whether libvirt starts a dnsmasq for the network. libvirt 9.0 starts dnsmasq
        only when some <ip> has a DHCP range or host, or DNS is not disabled
        (bridge_driver.c networkStartDhcpDaemon: "no DHCP services needed, and user
        disabled DNS service"); topoc writes <dns enable='no'/> unless the network says
        `dns on`."""
        return network.dhcp is not None or network.dhcp6 is not None or network.dns

    def advertises_router(self, network: Network) -> bool:
        """Whether libvirt's dnsmasq sends router advertisements that give the network's
        guests an IPv6 default route: a mode of ra_router_modes with an IPv6 address, and
        a dnsmasq at all (runs_dnsmasq)."""
        return (network.mode in self.ra_router_modes and network.address6 is not None
                and self.runs_dnsmasq(network))

    @property
    def routed_modes(self) -> tuple[Mode, ...]:
        """Networks the host routes without NAT of libvirt's (routed, open): the VMs'
        own addresses go out, so the LAN needs a route back, or the lab a `masquerade`."""
        return tuple(m for m in self.forwarding_modes if m not in self.masqueraded_modes)


DEFAULT_PROFILE = Profile()
# A host whose KVM is missing or unusable: QEMU emulates the CPU (TCG).
TCG_PROFILE = Profile(domain_type="qemu")
