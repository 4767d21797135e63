"""The host scripts' IPv6 side on a real kernel, beyond what every case's up-twice /
down-twice run shows (test_host_netns): libvirt's bridge sysctls against a host whose
default is IPv6 on, an IPv6 host route, the ip6 table's ownership guard, IPv6
forwarding's old value restored, and libvirt's refusal to turn IPv6 forwarding on when
the kernel would flush the routes it learnt from router advertisements."""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

from host_cases import case_files, case_name, compile_case
from test_host_netns import (  # noqa: F401
    _conf6,
    _json,
    assert_as_the_topology_says,
    assert_same,
    netns,
    ns_ok,
    ns_run,
    ok_script,
    run_script,
    snapshot,
    stand_in_for_host,
    write_scripts,
)

from topoc.backends.host import table_name
from topoc.model.ir import Lab

DUAL = next(p for p in case_files() if case_name(p) == "dualstack")


def _up(ns: str, lab: Lab, tmp_path: Path) -> tuple[Path, Path]:
    stand_in_for_host(ns, lab, lab.hosts[0])
    return write_scripts(lab, lab.hosts[0].name, tmp_path / "host"), tmp_path / "state"


def test_an_ipv4_only_bridge_gets_ipv6_off_where_the_host_default_is_on(netns, tmp_path: Path) -> None:  # noqa: F811
    """libvirt sets disable_ipv6 1 on the bridge of a network without an IPv6 address
    (networkSetIPv6Sysctls): the kernel's default does not decide it."""
    lab = compile_case(DUAL)
    ns = netns()
    ns_ok(ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=0",
          "net.ipv6.conf.default.accept_ra=1", "net.ipv6.conf.default.autoconf=1")
    scripts, state = _up(ns, lab, tmp_path)
    ok_script(ns, scripts, "up.sh", state)
    assert _conf6(ns, "br4only") == {"disable_ipv6": "1", "accept_ra": "0", "autoconf": "0"}
    assert _conf6(ns, "br6host") == {"disable_ipv6": "0", "accept_ra": "0", "autoconf": "0"}
    ok_script(ns, scripts, "down.sh", state)
    links = {link["ifname"] for link in _json(ns, "ip", "-j", "link")}  # type: ignore[union-attr]
    assert not {"br4only", "br6host"} & links


def test_an_ipv6_host_route_is_added_once_and_removed(netns, tmp_path: Path) -> None:  # noqa: F811
    lab = compile_case(DUAL)  # route fd00:77::/48 via fd00:102::5 (web, on hostnet)
    ns = netns()
    scripts, state = _up(ns, lab, tmp_path)
    before = snapshot(ns)
    first = ok_script(ns, scripts, "up.sh", state)
    assert "route fd00:77::/48 via fd00:102::5: added" in first
    assert_as_the_topology_says(ns, lab, lab.hosts[0], before)
    after = snapshot(ns)
    assert "route fd00:77::/48 via fd00:102::5: exists" in ok_script(ns, scripts, "up.sh", state)
    assert_same(snapshot(ns), after, "a second up.sh changed something")
    assert "route fd00:77::/48 via fd00:102::5: deleted" in ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)


def test_an_ip6_table_up_did_not_make_is_refused_and_kept(netns, tmp_path: Path) -> None:  # noqa: F811
    lab = compile_case(DUAL)
    ns = netns()
    table = table_name(lab)
    scripts, state = _up(ns, lab, tmp_path)
    ns_ok(ns, "nft", "add", "table", "ip6", table)
    ns_ok(ns, "nft", "add", "chain", "ip6", table, "mine")
    before = snapshot(ns)
    result = run_script(ns, scripts, "up.sh", state)
    assert result.returncode == 1
    assert f"nftables table ip6 {table} exists already and up.sh did not create it" in result.stderr
    assert "chain mine" in ns_ok(ns, "nft", "list", "table", "ip6", table)
    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)
    assert "chain mine" in ns_ok(ns, "nft", "list", "table", "ip6", table)


def test_ipv6_forwarding_that_was_on_stays_on(netns, tmp_path: Path) -> None:  # noqa: F811
    lab = compile_case(DUAL)
    ns = netns()
    scripts, state = _up(ns, lab, tmp_path)
    ns_ok(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
    before = snapshot(ns)
    assert "net.ipv6.conf.all.forwarding: 1 (was 1)" in ok_script(ns, scripts, "up.sh", state)
    assert (state / "ipv6_forwarding").read_text() == "1\n"
    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)
    assert before["ipv6_forwarding"] == "1"


# A router advertisement (RFC 4861 4.2: type 134, hop limit 64, router lifetime 1800 s),
# sent from a link-local address with hop limit 255; the kernel fills in the checksum
# of an ICMPv6 raw socket (RFC 3542 3.1).
SEND_RA = """
import socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.bind(("fe80::1", 0, 0, socket.if_nametoindex(sys.argv[1])))
s.sendto(struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0),
         ("ff02::1", 0, 0, socket.if_nametoindex(sys.argv[1])))
"""
RTF_ADDRCONF = 0x40000


def _ra_routes(ns: str) -> list[str]:
    return [line for line in ns_ok(ns, "cat", "/proc/net/ipv6_route").splitlines()
            if int(line.split()[8], 16) & RTF_ADDRCONF]


def test_ipv6_forwarding_is_refused_where_it_would_flush_ra_routes(netns, tmp_path: Path) -> None:  # noqa: F811
    """As libvirt's virNetDevIPCheckIPv6Forwarding: the host learnt its default route
    from a router advertisement on an interface with accept_ra 1; turning forwarding on
    would flush it, so up.sh stops before it changes anything, with libvirt's words."""
    assert socket.has_ipv6 and struct.calcsize("!BBHBBHII") == 16
    lab = compile_case(DUAL)
    ns, router = netns(), netns()
    scripts, state = _up(ns, lab, tmp_path)
    # The LAN: ra0 here, ra1 in a second namespace, the router that advertises itself.
    ns_ok(ns, "ip", "link", "add", "name", "ra0", "type", "veth", "peer", "name", "ra1", "netns", router)
    ns_ok(ns, "ip", "link", "set", "dev", "ra0", "addrgenmode", "none")
    ns_ok(ns, "sysctl", "-q", "-w", "net.ipv6.conf.ra0.disable_ipv6=0", "net.ipv6.conf.ra0.accept_ra=1",
          "net.ipv6.conf.ra0.forwarding=0")
    ns_ok(ns, "ip", "link", "set", "dev", "ra0", "up")
    ns_ok(router, "ip", "link", "set", "dev", "ra1", "addrgenmode", "none")
    ns_ok(router, "sysctl", "-q", "-w", "net.ipv6.conf.ra1.disable_ipv6=0")
    ns_ok(router, "ip", "-6", "addr", "add", "fe80::1/64", "dev", "ra1", "nodad")
    ns_ok(router, "ip", "link", "set", "dev", "ra1", "up")
    # (addrgenmode none leaves out the multicast route an address would have brought)
    ns_ok(router, "ip", "-6", "route", "add", "multicast", "ff00::/8", "dev", "ra1", "table", "local")
    ns_ok(router, sys.executable, "-c", SEND_RA, "ra1")
    for _ in range(50):
        if _ra_routes(ns):
            break
        ns_ok(ns, "sleep", "0.1")
    assert _ra_routes(ns), "the router advertisement gave no route"
    before = snapshot(ns)
    result = run_script(ns, scripts, "up.sh", state)
    assert result.returncode == 1
    assert ("Check the host setup: interface ra0 has kernel autoconfigured IPv6 routes and enabling "
            "forwarding  without accept_ra set to 2 will cause the kernel to flush them") in result.stderr
    assert_same(snapshot(ns), before)
    # accept_ra 2 keeps them under forwarding (ip-sysctl.rst): up.sh goes ahead.
    ns_ok(ns, "sysctl", "-q", "-w", "net.ipv6.conf.ra0.accept_ra=2")
    ok_script(ns, scripts, "up.sh", state)
    assert _ra_routes(ns), "the routes learnt from the advertisement are still there"
    ok_script(ns, scripts, "down.sh", state)


def _ipv6_link(ns: str, link: str, address: str, *routes: tuple[str, str]) -> None:
    """IPv6 on a link of a stand-in node, as a guest has it but without DAD's wait: a
    fixed link-local address (neighbour discovery answers to one) and its address, both
    nodad; and routes (destination, gateway)."""
    ns_ok(ns, "ip", "link", "set", "dev", link, "addrgenmode", "none")
    ns_ok(ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{link}.disable_ipv6=0")
    ns_ok(ns, "ip", "-6", "addr", "add", "fe80::ff/64", "dev", link, "nodad")
    ns_ok(ns, "ip", "-6", "addr", "add", address, "dev", link, "nodad")
    ns_ok(ns, "ip", "link", "set", "dev", link, "up")
    for destination, gateway in routes:
        ns_ok(ns, "ip", "-6", "route", "add", destination, "via", gateway)


def _ping(ns: str, address: str) -> tuple[bool, str]:
    """Whether any of a few pings in 5 s is answered (the host's first neighbour
    solicitation on a fresh bridge may wait for its link-local address's DAD), and
    what ping said."""
    run = ns_run(ns, "ping", "-6", "-c", "3", "-i", "0.5", "-w", "5", address)
    return run.returncode == 0, run.stdout


def _pings(ns: str, address: str) -> bool:
    return _ping(ns, address)[0]


def test_routed_ipv6_passes_the_inet_table_and_the_ip6_table_decides(netns, tmp_path: Path) -> None:  # noqa: F811
    """Real IPv6 through the host namespace after up.sh: the LAN reaches web on the routed
    network (ip6 FWI routed in), not on the host-only one (ip6 FWI reject). Without the
    inet table's `meta nfproto ipv4`, its IPv4 rejects would stop the routed IPv6 too."""
    lab = compile_case(DUAL)
    host, lan, web = netns(), netns(), netns()
    stand_in_for_host(host, lab, lab.hosts[0], adopt_first_tap=False)
    # The LAN router at the other end of eth0, with routes to both of web's subnets.
    ns_ok(host, "ip", "link", "set", "dev", "lan0", "netns", lan)
    _ipv6_link(lan, "lan0", "2001:db8:101::1/64", ("2001:db8:1::/64", "2001:db8:101::11"),
               ("fd00:102::/64", "2001:db8:101::11"))
    # web's two nics: the host ends carry the taps' names (up.sh adopts them).
    for index, (address, gateway) in enumerate((("2001:db8:1::10/64", "2001:db8:1::1"),
                                                ("fd00:102::5/64", None))):
        tap = f"tt-web-{index}"
        ns_ok(host, "ip", "link", "add", "name", tap, "type", "veth", "peer", "name", f"eth{index}",
              "netns", web)
        _ipv6_link(web, f"eth{index}", address, *((("::/0", gateway),) if gateway else ()))
    scripts, state = write_scripts(lab, "kvm1", tmp_path / "host"), tmp_path / "state"
    ok_script(host, scripts, "up.sh", state)
    assert _pings(lan, "2001:db8:1::10"), "routed IPv6 into routenet"
    answered, said = _ping(lan, "fd00:102::5")
    # libvirt's ip6tables REJECT into a host-only network: ICMPv6 port unreachable
    assert not answered and "Destination unreachable: Port unreachable" in said, said

    # The same file without the inet rules' family: their rejects now stop IPv6 as well.
    nft = (scripts / "topoc.nft").read_text()
    assert "meta nfproto ipv4 oifname \"br6rt\" reject" in nft
    ns_ok(host, "nft", "-f", "-", input=nft.replace("meta nfproto ipv4 ", ""))
    answered, said = _ping(lan, "2001:db8:1::10")
    assert not answered and "Port unreachable" in said, said
    ns_ok(host, "nft", "-f", str(scripts / "topoc.nft"))
    assert _pings(lan, "2001:db8:1::10")
    ok_script(host, scripts, "down.sh", state)


def test_ipv6_masquerade_of_nat6_and_of_a_routed_network_brings_replies_back(netns, tmp_path: Path) -> None:  # noqa: F811
    """dualstack-nat6: a WAN peer with no route back to the lab's ULA subnets answers
    files (nat with `nat6 on`: libvirt's PRT masquerade in the ip6 table) and web (routed
    with `masquerade`: the lab's own), because both leave as the host's eth1 address."""
    lab = compile_case(next(p for p in case_files() if case_name(p) == "dualstack-nat6"))
    host, wan, files, web = netns(), netns(), netns(), netns()
    stand_in_for_host(host, lab, lab.hosts[0], adopt_first_tap=False)
    ns_ok(host, "ip", "link", "set", "dev", "lan1", "netns", wan)  # eth1's far end
    _ipv6_link(wan, "lan1", "2001:db8:113::99/64")
    for tap, ns, address, gateway in (("tt-files-1", files, "fd00:64::2/64", "fd00:64::1"),
                                      ("tt-web-0", web, "fd00:101::10/64", "fd00:101::1")):
        ns_ok(host, "ip", "link", "add", "name", tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ipv6_link(ns, "eth0", address, ("::/0", gateway))
    scripts, state = write_scripts(lab, "kvm1", tmp_path / "host"), tmp_path / "state"
    ok_script(host, scripts, "up.sh", state)
    for ns in (files, web):
        answered, said = _ping(ns, "2001:db8:113::99")
        assert answered, said
    # Without the ip6 table's nat chain the replies have no way back (a new ping is a
    # new conntrack entry, decided without NAT).
    ns_ok(host, "nft", "delete", "chain", "ip6", table_name(lab), "postrouting")
    answered, said = _ping(files, "2001:db8:113::99")
    assert not answered, said
    ok_script(host, scripts, "down.sh", state)
