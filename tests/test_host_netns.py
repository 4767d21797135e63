"""The host scripts on a real kernel: every generated ruleset checked and loaded, and
up.sh / down.sh run twice each inside a network namespace that stands in for the host
(a veth plays its NIC, carrying the host's LAN address and default route).

After up.sh the bridges, taps, addresses, routes, forwarding and nft table are what the
topology says (read from the IR here, not from the backend's plan); a second up.sh
changes nothing; after down.sh (twice) the namespace is exactly as before. Every
namespace is deleted by the fixture, also when a test fails, and with it every link and
table the test made. Names include os.getpid(), so parallel runs do not collide.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest
from conftest import require_root, require_tool
from host_cases import case_files, case_name, compile_case

from topoc.backends.host import host_artifacts, table_name
from topoc.model import naming
from topoc.model.family import IPV6
from topoc.model.ir import Host, Lab, Mode
from topoc.model.naming import tap_name

CASES = case_files()
HOST_CASES = [(path, host.name) for path in CASES for host in compile_case(path).hosts]
HOST_IDS = [f"{case_name(p)}-{h}" for p, h in HOST_CASES]
_counter = itertools.count()

# A table of someone else's, present before the lab's and expected unchanged after.
BYSTANDER = """\
table ip bystander {
    chain forward {
        type filter hook forward priority 10; policy accept;
        ip saddr 203.0.113.0/24 counter drop
    }
}
"""

# Fields of `ip -j` and `nft -j` output that change without anything being changed.
# ("qdisc": a link's first `up` attaches its default qdisc, noop -> noqueue, and no
# `down` takes it back; an adopted tap that was down before up.sh keeps noqueue.)
# ("tentative": an IPv6 link-local address of a link with carrier leaves it a second
# later, when duplicate address detection is done.)
VOLATILE = {"ifindex", "link_index", "stats", "stats64", "handle", "metainfo",
            "valid_life_time", "preferred_life_time", "qdisc", "operstate", "tentative"}


def _run(*cmd: str, input: str | None = None, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def ns_run(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess[str]:
    return _run("ip", "netns", "exec", ns, *cmd, **kw)


def ns_ok(ns: str, *cmd: str, **kw) -> str:
    result = ns_run(ns, *cmd, **kw)
    assert result.returncode == 0, f"{cmd} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    """A factory of throwaway network namespaces, all deleted at teardown."""
    require_root()
    for tool in ("ip", "nft", "bash", "sysctl"):
        require_tool(tool)
    made: list[str] = []

    def make() -> str:
        name = f"topoc-h{os.getpid()}-{next(_counter)}"
        result = _run("ip", "netns", "add", name)
        assert result.returncode == 0, result.stderr
        made.append(name)
        # No IPv6: link-local addresses come and go on their own (DAD), which would make
        # "as before" comparisons flaky; the lab is IPv4.
        ns_ok(name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
              "net.ipv6.conf.default.disable_ipv6=1")
        return name

    yield make
    for name in made:
        _run("ip", "netns", "del", name)
    left = _run("ip", "netns", "list").stdout.split()
    assert not set(made) & set(left), f"namespaces left behind: {set(made) & set(left)}"


# Carrier follows the far end and settles asynchronously (a bridge whose ports are fresh
# taps goes UNKNOWN -> DOWN/NO-CARRIER a moment after `up`, and its routes `linkdown`):
# state, not configuration.
# The administrative UP flag stays in the comparison.
CARRIER_FLAGS = {"NO-CARRIER", "LOWER_UP", "M-DOWN", "DORMANT", "linkdown"}


def _strip(value):
    if isinstance(value, dict):
        return {k: (_strip([f for f in v if f not in CARRIER_FLAGS]) if k == "flags" else _strip(v))
                for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _json(ns: str, *cmd: str) -> object:
    return json.loads(ns_ok(ns, *cmd) or "[]")


def snapshot(ns: str) -> dict[str, object]:
    """What up.sh may change and down.sh must restore, without volatile fields."""
    return {
        "link": sorted(_strip(_json(ns, "ip", "-j", "link")), key=lambda l: l["ifname"]),
        "addr": sorted(_strip(_json(ns, "ip", "-j", "addr")), key=lambda l: l["ifname"]),
        "route": _strip(_json(ns, "ip", "-j", "route", "show", "table", "main")),
        "route6": _strip(_json(ns, "ip", "-6", "-j", "route", "show", "table", "main")),
        "ruleset": _strip(_json(ns, "nft", "-j", "list", "ruleset")["nftables"]),  # type: ignore[index]
        "ip_forward": ns_ok(ns, "sysctl", "-n", "net.ipv4.ip_forward").strip(),
        "ipv6_forwarding": ns_ok(ns, "sysctl", "-n", "net.ipv6.conf.all.forwarding").strip(),
        # every link's IPv6 settings (all.forwarding writes each link's forwarding)
        "ipv6_conf": sorted(ns_ok(ns, "sh", "-c", "cd /proc/sys/net/ipv6/conf && grep -H . "
                                  "*/forwarding */disable_ipv6 */accept_ra */autoconf").splitlines()),
    }


def assert_same(actual: dict, expected: dict, what: str = "the namespace changed") -> None:
    """Equality of two snapshots, failing with a unified diff of their JSON."""
    if actual != expected:
        diff = difflib.unified_diff(json.dumps(expected, indent=1, sort_keys=True).splitlines(),
                                    json.dumps(actual, indent=1, sort_keys=True).splitlines(),
                                    "expected", "actual", lineterm="")
        pytest.fail(f"{what}:\n" + "\n".join(diff))


def write_scripts(lab: Lab, host: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in host_artifacts(lab, host).items():
        (directory / name).write_text(text)
    return directory


def stand_in_for_host(ns: str, lab: Lab, host: Host, adopt_first_tap: bool = True) -> None:
    """The host's NICs (a veth each, with its address and default route) and, as
    topoc verify does, the first VM nic's tap already present as a veth."""
    ns_ok(ns, "nft", "-f", "-", input=BYSTANDER)
    for i, nic in enumerate(host.nics):
        ns_ok(ns, "ip", "link", "add", "name", nic.name, "type", "veth", "peer", "name", f"lan{i}")
        ns_ok(ns, "ip", "link", "set", "dev", f"lan{i}", "up")
        ns_ok(ns, "ip", "link", "set", "dev", nic.name, "up")
        if nic.address is not None:
            ns_ok(ns, "ip", "addr", "add", str(nic.address), "dev", nic.name)
        if nic.gateway is not None:
            ns_ok(ns, "ip", "route", "add", "default", "via", str(nic.gateway), "dev", nic.name)
        if nic.address6 is not None:
            # IPv6 on this NIC alone, without a link-local address (whose DAD would make
            # "as before" flaky), its address without DAD.
            ns_ok(ns, "ip", "link", "set", "dev", nic.name, "addrgenmode", "none")
            ns_ok(ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{nic.name}.disable_ipv6=0")
            ns_ok(ns, "ip", "-6", "addr", "add", str(nic.address6), "dev", nic.name, "nodad")
        if nic.gateway6 is not None:
            ns_ok(ns, "ip", "-6", "route", "add", "default", "via", str(nic.gateway6), "dev", nic.name)
    vms = sorted(lab.vms_on(host.name), key=lambda v: v.name)
    if adopt_first_tap and vms and vms[0].nics:
        ns_ok(ns, "ip", "link", "add", "name", tap_name(lab.name, vms[0].name, 0),
              "type", "veth", "peer", "name", "vmend0")


def run_script(ns: str, directory: Path, script: str, state: Path, cwd: Path | None = None
               ) -> subprocess.CompletedProcess[str]:
    return ns_run(ns, "bash", str(directory / script), env={"TOPOC_STATE_DIR": str(state)}, cwd=cwd)


def ok_script(ns: str, directory: Path, script: str, state: Path, **kw) -> str:
    result = run_script(ns, directory, script, state, **kw)
    assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def _links(ns: str) -> dict[str, dict]:
    return {link["ifname"]: link for link in _json(ns, "ip", "-d", "-j", "link")}  # type: ignore[union-attr]


def _inet(ns: str, family: str = "inet") -> dict[str, list[str]]:
    """Each link's addresses of a family ("inet6": the global ones, not link-local)."""
    return {entry["ifname"]: sorted(f"{a['local']}/{a['prefixlen']}" for a in entry["addr_info"]
                                    if a["family"] == family and a.get("scope") != "link")
            for entry in _json(ns, "ip", "-j", "addr")}  # type: ignore[union-attr]


def _conf6(ns: str, link: str) -> dict[str, str]:
    """The IPv6 sysctls libvirt sets on its bridges (read from /proc: a link name may
    hold a dot, which sysctl's names do not allow)."""
    return {key: ns_ok(ns, "cat", f"/proc/sys/net/ipv6/conf/{link}/{key}").strip()
            for key in ("disable_ipv6", "accept_ra", "autoconf")}


def host_has_ipv6(lab: Lab, host: Host) -> bool:
    """Whether the host's firewall has an IPv6 side: a network of it with an IPv6 subnet."""
    return any(n.subnet6 is not None for n in lab.networks_on(host.name) if n.managed)


def assert_as_the_topology_says(ns: str, lab: Lab, host: Host, before: dict) -> None:
    networks = [n for n in lab.networks_on(host.name) if n.managed]
    taps = {tap_name(lab.name, vm.name, nic.index): lab.network(nic.network)
            for vm in lab.vms_on(host.name) for nic in vm.nics}
    links, inet = _links(ns), _inet(ns)
    old_names = {link["ifname"] for link in before["link"]}  # type: ignore[union-attr]
    # Networks on several hosts: a bridge on each of their hosts (without an address on
    # the others), and a VXLAN link to the other hosts, a port of that bridge.
    carried = lab.networks_carried_by(host.name)
    spanning = [n for n in (*networks, *carried) if n.spanning]
    vxlans = {naming.vxlan_name(n.vni): n for n in spanning}
    assert set(links) == old_names | {n.bridge for n in (*networks, *carried)} | set(taps) | set(vxlans)
    for name, net in vxlans.items():
        link = links[name]
        assert link["linkinfo"]["info_kind"] == "vxlan" and link["linkinfo"]["info_data"]["id"] == net.vni
        assert link["master"] == net.bridge and "UP" in link["flags"]
    for net in carried:
        assert inet.get(net.bridge, []) == [], "no address on a bridge its host carries at L2"

    inet6 = _inet(ns, "inet6")
    ipv6 = IPV6 in lab.families
    for net in networks:
        bridge = links[net.bridge]
        if ipv6 and net.mode is not Mode.BRIDGED:
            # libvirt 9.0's networkSetIPv6Sysctls on a virtual network's bridge
            on = "0" if net.address6 is not None else "1"
            assert _conf6(ns, net.bridge) == {"disable_ipv6": on, "accept_ra": "0", "autoconf": "0"}
            assert inet6.get(net.bridge, []) == ([str(net.address6)] if net.address6 else [])
        assert bridge["linkinfo"]["info_kind"] == "bridge"
        assert "UP" in bridge["flags"]
        data = bridge["linkinfo"]["info_data"]
        assert data["stp_state"] == (1 if net.stp else 0)
        if not net.stp:
            assert data["forward_delay"] == 0
        if net.mtu is not None:
            assert bridge["mtu"] == net.mtu
        if net.mode is Mode.BRIDGED:
            nic = next(n for n in host.nics if n.name == net.via)
            assert links[net.via]["master"] == net.bridge
            assert inet[net.bridge] == [str(nic.address)] and inet[net.via] == []
            # its IPv6 address too (the link-local ones aside)
            assert inet6.get(net.bridge, []) == ([str(nic.address6)] if nic.address6 else [])
            assert inet6.get(net.via, []) == []
        else:
            assert inet[net.bridge] == ([str(net.address)] if net.address else [])
    for tap, net in taps.items():
        assert links[tap]["master"] == net.bridge and "UP" in links[tap]["flags"]  # type: ignore[union-attr]
        if net.mtu is not None:  # type: ignore[union-attr]
            assert links[tap]["mtu"] == net.mtu  # type: ignore[union-attr]

    routes = _json(ns, "ip", "-j", "route", "show", "table", "main")
    routes6 = _json(ns, "ip", "-6", "-j", "route", "show", "table", "main")
    for route in host.routes:
        if route.family is not IPV6 and not route.is_default:
            assert any(r["dst"] == str(route.destination) and r.get("gateway") == str(route.via)
                       for r in routes), (route, routes)  # type: ignore[union-attr]
    bridged = {n.via: n.bridge for n in networks if n.mode is Mode.BRIDGED}
    for old in before["route"]:  # type: ignore[union-attr]
        if old["dst"] == "default":
            moved = {**old, "dev": bridged.get(old["dev"], old["dev"])}
            assert moved in _strip(routes), (moved, routes)

    for route in host.routes:
        if route.family is IPV6 and not route.is_default:
            assert any(r["dst"] == str(route.destination) and r.get("gateway") == str(route.via)
                       for r in routes6), (route, routes6)  # type: ignore[union-attr]
    for old in before["route6"]:  # type: ignore[union-attr]
        if old["dst"] == "default":
            moved = {**old, "dev": bridged.get(old["dev"], old["dev"])}
            assert moved in _strip(routes6), (moved, routes6)

    forwarding = any(n.mode in (Mode.NAT, Mode.ROUTED, Mode.OPEN) for n in networks)
    assert ns_ok(ns, "sysctl", "-n", "net.ipv4.ip_forward").strip() == ("1" if forwarding else before["ip_forward"])
    # libvirt: IPv6 forwarding for a nat, routed or open network with an IPv6 address
    forwarding6 = any(n.mode in (Mode.NAT, Mode.ROUTED, Mode.OPEN) and n.address6 is not None
                      for n in networks)
    assert ns_ok(ns, "sysctl", "-n", "net.ipv6.conf.all.forwarding").strip() == (
        "1" if forwarding6 else before["ipv6_forwarding"])

    expected = host_artifacts(lab, host.name)["topoc.nft"]
    comments = [line.split(' comment "')[1] for line in expected.splitlines() if ' comment "' in line]
    listed = []
    for family in ("inet", "ip6") if host_has_ipv6(lab, host) else ("inet",):
        ruleset = ns_ok(ns, "nft", "list", "table", family, table_name(lab))
        listed += [line.split(' comment "')[1] for line in ruleset.splitlines() if ' comment "' in line]
    assert listed == comments
    bystander = ns_ok(ns, "nft", "list", "table", "ip", "bystander")
    assert "ip saddr 203.0.113.0/24 counter packets 0 bytes 0 drop" in bystander


@pytest.mark.parametrize("path", CASES, ids=[case_name(p) for p in CASES])
def test_ruleset_checks_and_loads_beside_another_table(path: Path, netns) -> None:
    lab = compile_case(path)
    ns = netns()
    ns_ok(ns, "nft", "-f", "-", input=BYSTANDER)
    before = snapshot(ns)["ruleset"]
    for host in lab.hosts:
        text = host_artifacts(lab, host.name)["topoc.nft"]
        ns_ok(ns, "nft", "-c", "-f", "-", input=text)
        assert snapshot(ns)["ruleset"] == before, "nft -c changed the ruleset"
        ns_ok(ns, "nft", "-f", "-", input=text)
        loaded = snapshot(ns)["ruleset"]
        ns_ok(ns, "nft", "-f", "-", input=text)  # again: replaced, not doubled
        assert snapshot(ns)["ruleset"] == loaded
        tables = [(item["table"]["family"], item["table"]["name"])  # type: ignore[index]
                  for item in loaded if "table" in item]  # type: ignore[operator]
        families = ("inet", "ip6") if host_has_ipv6(lab, host) else ("inet",)
        assert tables == [("ip", "bystander"), *((f, table_name(lab)) for f in families)]
        for family in families:
            ns_ok(ns, "nft", "delete", "table", family, table_name(lab))
        assert snapshot(ns)["ruleset"] == before, "the bystander table changed"


@pytest.mark.parametrize("path, host_name", HOST_CASES, ids=HOST_IDS)
def test_up_twice_then_down_twice(path: Path, host_name: str, netns, tmp_path: Path) -> None:
    lab = compile_case(path)
    host = next(h for h in lab.hosts if h.name == host_name)
    ns = netns()
    stand_in_for_host(ns, lab, host)
    before = snapshot(ns)
    scripts, state = write_scripts(lab, host.name, tmp_path / "host"), tmp_path / "state"

    first = ok_script(ns, scripts, "up.sh", state)
    assert_as_the_topology_says(ns, lab, host, before)
    after_up = snapshot(ns)
    ok_script(ns, scripts, "up.sh", state)
    assert_same(snapshot(ns), after_up, "a second up.sh changed something")
    assert all(line.startswith("up.sh: ") for line in first.splitlines())

    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)
    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)
    assert not state.exists(), "down.sh left its state behind"


def _half_failed(path_name: str, host_name: str, sabotage: list[list[str]], message: str,
                 netns, tmp_path: Path) -> None:
    path = next(p for p in CASES if case_name(p) == path_name)
    lab = compile_case(path)
    host = next(h for h in lab.hosts if h.name == host_name)
    ns = netns()
    stand_in_for_host(ns, lab, host)
    for command in sabotage:
        ns_ok(ns, *command)
    before = snapshot(ns)
    scripts, state = write_scripts(lab, host.name, tmp_path / "host"), tmp_path / "state"
    failed = run_script(ns, scripts, "up.sh", state)
    assert failed.returncode != 0 and message in failed.stderr, failed.stdout + failed.stderr
    assert snapshot(ns) != before, "the sabotage should stop up.sh half-way, not at once"
    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)
    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)


def test_down_after_up_failed_at_a_bridge(netns, tmp_path: Path) -> None:
    """mixed.topo's third bridge (br1) is taken by a veth: up.sh stops after making two
    bridges; down.sh removes those and leaves the veth alone."""
    _half_failed("mixed", "kvm1", [["ip", "link", "add", "name", "br1", "type", "veth", "peer", "name", "br1peer"]],
                 "br1 exists and is not a bridge", netns, tmp_path)


def test_down_after_up_failed_at_a_route(netns, tmp_path: Path) -> None:
    """A route to 10.99.0.0/16 through another gateway stops up.sh after the bridge, tap
    and nft table; down.sh removes those and leaves that route alone."""
    _half_failed("twohosts", "alpha",
                 [["ip", "route", "add", "10.99.0.0/16", "via", "192.168.50.253"]],
                 "a route to 10.99.0.0/16 exists with another gateway", netns, tmp_path)


HOSTILE_DIR = "it's a \"dir\" $(touch PWNED); `touch PWNED2`\nnext line"


def test_hostile_script_and_state_paths_stay_inert(netns, tmp_path: Path) -> None:
    """up.sh finds topoc.nft next to itself and keeps state where TOPOC_STATE_DIR says:
    both may hold spaces, quotes, `$(...)`, backticks, `;` and newlines."""
    path = next(p for p in CASES if case_name(p) == "nat")
    lab = compile_case(path)
    ns = netns()
    stand_in_for_host(ns, lab, lab.hosts[0])
    before = snapshot(ns)
    scripts = write_scripts(lab, "kvm1", tmp_path / HOSTILE_DIR / "host")
    state = tmp_path / f"state {HOSTILE_DIR}"
    work = tmp_path / "cwd"
    work.mkdir()
    ok_script(ns, scripts, "up.sh", state, cwd=work)
    assert (state / "created").is_file()
    assert_as_the_topology_says(ns, lab, lab.hosts[0], before)
    ok_script(ns, scripts, "down.sh", state, cwd=work)
    assert_same(snapshot(ns), before)
    planted = [p for p in tmp_path.rglob("PWNED*")] + list(Path.cwd().glob("PWNED*"))
    assert planted == [], f"a path was executed: {planted}"


def test_scripts_refuse_to_run_without_root(netns) -> None:
    setpriv = require_tool("setpriv")
    lab = compile_case(next(p for p in CASES if case_name(p) == "nat"))
    ns = netns()
    before = snapshot(ns)
    directory = Path(tempfile.mkdtemp(prefix=f"topoc-host-{os.getpid()}-"))
    try:
        directory.chmod(0o755)
        write_scripts(lab, "kvm1", directory)
        for script in ("up.sh", "down.sh"):
            result = ns_run(ns, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                            "bash", str(directory / script), env={"TOPOC_STATE_DIR": str(directory / "state")})
            assert result.returncode == 1
            assert f"{script}: error: run it as root" in result.stderr
            assert result.stdout == ""
    finally:
        shutil.rmtree(directory)
    assert_same(snapshot(ns), before)


def test_forwarding_that_was_on_stays_on(netns, tmp_path: Path) -> None:
    """down.sh restores the old ip_forward value, not a blanket 0."""
    lab = compile_case(next(p for p in CASES if case_name(p) == "routed"))
    ns = netns()
    stand_in_for_host(ns, lab, lab.hosts[0])
    ns_ok(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    before = snapshot(ns)
    scripts, state = write_scripts(lab, "kvm1", tmp_path / "host"), tmp_path / "state"
    assert "net.ipv4.ip_forward: 1 (was 1)" in ok_script(ns, scripts, "up.sh", state)
    assert (state / "ip_forward").read_text() == "1\n"
    ok_script(ns, scripts, "down.sh", state)
    assert_same(snapshot(ns), before)
    assert before["ip_forward"] == "1"
