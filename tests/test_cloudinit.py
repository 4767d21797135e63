"""The cloud-init backend: golden seeds for every case, and every network-config read by
netplan's own parser (`netplan generate`, Debian's netplan.io) and by cloud-init's own
(`cloud-init devel net-convert`, Debian's cloud-init: what a guest without netplan
runs), whose systemd-networkd files must carry exactly the addresses, routes and
nameservers the .topo states."""

from __future__ import annotations

import configparser
import subprocess
from dataclasses import dataclass, replace
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml

from conftest import IN_CI, ROOT, require_tool
from test_libvirt_cases import CASES, compiled
from topoc.backends import cloudinit
from topoc.compiler import compile_source
from topoc.model.family import FAMILIES
from topoc.model.ir import Route
from topoc.model.ir import Lab, Mode, Vm
from topoc.model.topology import DHCP_ROUTER_MODES, effective_routes

CASE_NAMES = sorted(CASES)


def vm_cases() -> list[tuple[str, str]]:
    return [(case, vm.name) for case in CASE_NAMES for vm in sorted(compiled(case).vms, key=lambda v: v.name)]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_golden(case: str, golden) -> None:
    for path, text in sorted(cloudinit.generate(compiled(case)).items()):
        golden.check(Path("cloud-init") / case / Path(path).relative_to(cloudinit.SEED_DIR), text)


@pytest.mark.parametrize("case,vm", vm_cases())
def test_every_file_is_the_yaml_cloud_init_reads(case: str, vm: str) -> None:
    lab = compiled(case)
    files = cloudinit.seed(lab, _vm(lab, vm))
    assert files["user-data"].startswith("#cloud-config\n")  # the header cloud-init requires
    user = yaml.safe_load(files["user-data"])
    assert user["runcmd"] == [["systemctl", "enable", "--now", "qemu-guest-agent.service"]]
    meta = yaml.safe_load(files["meta-data"])
    assert meta["local-hostname"] == cloudinit.hostname(_vm(lab, vm))
    assert meta["instance-id"].startswith(f"{lab.name}-{vm}-")
    network = yaml.safe_load(files["network-config"])
    assert network["version"] == 2 and "network" not in network  # NoCloud: no top-level key
    for nic in _vm(lab, vm).nics:
        entry = network["ethernets"][nic.name]
        assert entry["match"] == {"macaddress": nic.mac} and entry["set-name"] == nic.name


def test_user_and_keys_reach_user_data() -> None:
    lab = compiled("guests")
    web = yaml.safe_load(cloudinit.user_data(lab, _vm(lab, "web")))
    assert web["users"][0] == "default"
    alice = web["users"][1]
    assert alice["name"] == "alice" and alice["lock_passwd"] is True
    assert alice["ssh_authorized_keys"] == [_vm(lab, "web").ssh_keys[0]]
    app = yaml.safe_load(cloudinit.user_data(lab, _vm(lab, "app_1")))
    assert "users" not in app and app["ssh_authorized_keys"] == list(_vm(lab, "app_1").ssh_keys)


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDpVGRDU4L1zfKtIlMU5VPmHLrd5QNawDYN9UytxMOCO"
SMALL = """lab small
host h {{
}}
network n on h {{
    mode nat
    address 10.0.0.1/24
}}
vm v on h {{
    image /images/base.qcow2
    {extra}
    nic eth0 on n address {address}
}}
"""


def _compile(text: str, file: str = "small.topo") -> Lab:
    result = compile_source(text, file)
    assert result.ok and result.lab is not None, [d.message for d in result.diagnostics]
    return result.lab


def test_ssh_key_file_is_read_relative_to_the_topo_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "me.pub").write_text(f"# my key\n{KEY}   me@laptop\n")
    lab = _compile(SMALL.format(extra="ssh-key-file keys/me.pub", address="10.0.0.2"),
                   str(tmp_path / "small.topo"))
    assert lab.vms[0].ssh_keys == (f"{KEY} me@laptop",)
    assert f'"{KEY} me@laptop"' in cloudinit.user_data(lab, lab.vms[0])


def test_a_changed_seed_has_a_new_instance_id_and_volume() -> None:
    one = _compile(SMALL.format(extra="", address="10.0.0.2"))
    two = _compile(SMALL.format(extra="", address="10.0.0.3"))
    same = _compile(SMALL.format(extra="", address="10.0.0.2"))
    ids = [yaml.safe_load(cloudinit.seed(lab, lab.vms[0])["meta-data"])["instance-id"] for lab in (one, two, same)]
    assert ids[0] != ids[1] and ids[0] == ids[2]
    volumes = [cloudinit.seed_volume(lab, lab.vms[0]) for lab in (one, two, same)]
    assert volumes[0] != volumes[1] and volumes[0] == volumes[2]
    assert volumes[0].startswith("small-v-seed-") and volumes[0].endswith(".iso")


# --- netplan's own parser ---------------------------------------------------------------


def _netplan(network_config: str, root: Path) -> dict[str, configparser.ConfigParser]:
    """Run `netplan generate` on the file as cloud-init would install it (the NoCloud
    file under the `network:` key, /etc/netplan/50-cloud-init.yaml); the .network files
    it writes for systemd-networkd, by the interface name they match."""
    netplan_dir = root / "etc" / "netplan"
    netplan_dir.mkdir(parents=True)
    target = netplan_dir / "50-cloud-init.yaml"
    target.write_text("network:\n" + "".join(f"  {line}\n" if line else "\n"
                                             for line in network_config.splitlines()))
    target.chmod(0o600)  # netplan warns about world-readable configuration
    run = subprocess.run([require_tool("netplan"), "generate", "--root-dir", str(root)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # netplan's one warning allowed: `gateway6`, which topoc writes on purpose
    # (cloudinit._split_gateway6 says why).
    warnings = [line for line in run.stderr.splitlines() if line.strip()
                and "`gateway6` has been deprecated" not in line
                and not line.startswith("See the 'Default routes' section")]
    assert warnings == [], run.stderr
    found = {}
    for path in sorted((root / "run" / "systemd" / "network").glob("*.network")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        # networkd repeats [Route] sections and keys: read them as numbered sections.
        parser.read_string(_number_sections(path.read_text()))
        found[parser["Match"]["Name"]] = parser
    return found


def _number_sections(text: str) -> str:
    """networkd's file as configparser can read it: repeated [Route] and [Address]
    sections numbered,
    and a key repeated in one section (`Address=` once per address) as one key whose
    values are separated by spaces, in order."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    seen: dict[str, int] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if stripped in ("[Route]", "[Address]"):  # repeated sections: numbered
                seen[stripped] = seen.get(stripped, 0) + 1
                stripped = f"{stripped[:-1]}{seen[stripped]}]"
            sections.append((stripped, {}))
        elif "=" in stripped and not stripped.startswith("#") and sections:
            key, value = stripped.split("=", 1)
            sections[-1][1].setdefault(key, []).append(value)
    out = []
    for header, keys in sections:
        out.append(header)
        out += [f"{key}={' '.join(values)}" for key, values in keys.items()]
    return "\n".join(out) + "\n"


def _values(section: configparser.SectionProxy | None, key: str) -> list[str]:
    if section is None or key not in section:
        return []
    return section[key].split()


def _vm(lab: Lab, name: str) -> Vm:
    return next(v for v in lab.vms if v.name == name)


@dataclass(frozen=True)
class Expected:
    """What the .topo says one nic of a guest has, as a network daemon would show it."""

    addresses: list[str]  # both families, IPv4 first
    dhcp: list[str]  # networkd's DHCP= value ([] for none)
    routes: set[tuple[str, str]]  # (destination, gateway), the default ones as 0.0.0.0/0, ::/0
    exact_routes: bool  # False: a route two nics reach may sit on the other one
    servers: list[str]
    domains: list[str]


def _expected(lab: Lab, guest: Vm, nic) -> Expected:
    net = lab.network(nic.network)
    # DHCP for a family the nic has no address in (IPv4: unless its network is IPv6
    # only; IPv6: where the network has a DHCPv6 range).
    dhcp4 = nic.address is None and not (net is not None and net.subnet is None and net.subnet6 is not None)
    dhcp6 = nic.address6 is None and net is not None and net.dhcp6 is not None and net.mode is not Mode.BRIDGED
    dhcp = {(True, True): ["yes"], (True, False): ["ipv4"], (False, True): ["ipv6"], (False, False): []}[
        (dhcp4, dhcp6)]
    routes, servers = set(), []
    exact = True
    for family in FAMILIES:
        address = nic.address_in(family)
        subnet = address.network if address is not None else (net.subnet_in(family) if net else None)
        for route in effective_routes(lab, guest.name, family):
            if subnet is None or route.via not in subnet:
                continue
            if address is None and route.is_default and net is not None \
                    and net.mode in DHCP_ROUTER_MODES and net.gateway_in(family) == route.via:
                continue  # the DHCP lease (IPv4) or the router advertisement (IPv6) brings that one
            routes.add((str(route.destination), str(route.via)))
        # A route whose gateway two nics could reach goes on the first of them only.
        first = next((n for n in guest.nics if subnet is not None and n.address_in(family) is not None
                      and n.address_in(family).network == subnet), nic)
        exact = exact and first is nic
        dns = (address is not None and net is not None and net.dns and net.gateway_in(family) is not None
               and net.mode is not Mode.BRIDGED)
        if dns and net is not None:
            servers.append(str(net.gateway_in(family)))
    domains = [net.domain] if servers and net is not None and net.domain else []
    return Expected([str(a) for a in nic.addresses], dhcp, routes, exact, servers, domains)


def _check_routes(got: set[tuple[str, str]], expected: Expected, nic: str) -> None:
    if expected.exact_routes:
        assert got == expected.routes, (nic, got, expected.routes)
    else:
        assert got <= expected.routes


@pytest.mark.parametrize("case,vm", vm_cases())
def test_netplan_reads_it_as_the_topo_says(case: str, vm: str, tmp_path: Path) -> None:
    require_tool("netplan")
    lab = compiled(case)
    guest = _vm(lab, vm)
    networkd = _netplan(cloudinit.network_config(lab, guest), tmp_path)
    assert set(networkd) == {nic.name for nic in guest.nics}
    for nic in guest.nics:
        unit = networkd[nic.name]
        assert unit["Match"]["PermanentMACAddress"] == nic.mac
        network_section = unit["Network"] if "Network" in unit else None
        expected = _expected(lab, guest, nic)
        assert _values(network_section, "Address") == expected.addresses
        assert _values(network_section, "DHCP") == expected.dhcp
        # A static IPv6 address is the only one: no SLAAC from libvirt's RAs.
        assert _values(network_section, "IPv6AcceptRA") == (["no"] if nic.address6 is not None else [])
        got = {(unit[s]["Destination"], unit[s]["Gateway"]) for s in unit.sections() if s.startswith("Route")}
        # `gateway6`: netplan writes the IPv6 default route as [Network] Gateway=.
        got |= {("::/0", g) for g in _values(network_section, "Gateway") if ":" in g}
        _check_routes(got, expected, nic.name)
        assert _values(network_section, "DNS") == expected.servers
        assert _values(network_section, "Domains") == expected.domains


# Debian's cloud-init package, unpacked by `make test` (Makefile: CLOUD_INIT_STAMP).
CLOUD_INIT_ROOT = ROOT / ".venv" / "cloud-init" / "root"


def _cloud_init() -> list[str]:
    """The unpacked `cloud-init` command, run by the system python3 (its libraries are
    Debian's); skipped outside CI, and a failure in CI, when it is not there."""
    script = CLOUD_INIT_ROOT / "usr" / "bin" / "cloud-init"
    if not script.is_file():
        message = "cloud-init is not unpacked into .venv/cloud-init (make test does it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # The system's python3 (the script's own #! line): the venv's lacks its libraries.
    return ["/usr/bin/python3", str(script)]


def _cloud_init_env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(CLOUD_INIT_ROOT / "usr" / "lib" / "python3" / "dist-packages")}


def _cloud_init_networkd(network_config: str, root: Path) -> dict[str, configparser.ConfigParser]:
    """cloud-init's own reading of the file where no netplan renders it (Debian's
    images): its v2 parser and systemd-networkd renderer, run by `cloud-init devel
    net-convert` from Debian's cloud-init package (22.4, as Debian 12 guests have it);
    the .network files it writes, by the interface name they match."""
    source = root / "network-config"
    source.write_text(network_config, encoding="utf-8")
    out = root / "out"
    run = subprocess.run([*_cloud_init(), "devel", "net-convert", "-p", str(source), "-k", "yaml",
                          "-d", str(out), "-D", "debian", "-O", "networkd"],
                         capture_output=True, text=True, timeout=120, env=_cloud_init_env())
    assert run.returncode == 0, run.stderr
    found = {}
    for path in sorted((out / "etc" / "systemd" / "network").glob("*.network")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        parser.read_string(_number_sections(path.read_text()))
        found[parser["Match"]["Name"]] = parser
    return found


@pytest.mark.parametrize("case,vm", vm_cases())
def test_cloud_init_itself_reads_it_as_the_topo_says(case: str, vm: str, tmp_path: Path) -> None:
    """The same comparison on what cloud-init's own parser makes of the file: where it
    differs from netplan (an IPv6 default route written `to: "::/0"` became a route to
    ::/64 there), the guest would not be what the .topo says."""
    lab = compiled(case)
    guest = _vm(lab, vm)
    networkd = _cloud_init_networkd(cloudinit.network_config(lab, guest), tmp_path)
    assert set(networkd) == {nic.name for nic in guest.nics}
    for nic in guest.nics:
        unit = networkd[nic.name]
        assert unit["Match"]["MACAddress"] == nic.mac
        network_section = unit["Network"] if "Network" in unit else None
        expected = _expected(lab, guest, nic)
        addresses = [unit[s]["Address"] for s in unit.sections() if s.startswith("Address")]
        assert addresses == expected.addresses
        assert _values(network_section, "DHCP") == (expected.dhcp or ["no"])
        # A [Route] with a Gateway and no Destination is the default route of the
        # gateway's family (cloud-init's rendering of a subnet's gateway).
        got = {(unit[s].get("Destination") or ("::/0" if ":" in unit[s]["Gateway"] else "0.0.0.0/0"),
                unit[s]["Gateway"]) for s in unit.sections() if s.startswith("Route")}
        _check_routes(got, expected, nic.name)
        assert _values(network_section, "DNS") == expected.servers
        assert _values(network_section, "Domains") == expected.domains


def test_isolated_and_host_only_nics_get_no_default_route() -> None:
    for case in CASE_NAMES:
        lab = compiled(case)
        for vm in lab.vms:
            config = yaml.safe_load(cloudinit.network_config(lab, vm))
            for nic in vm.nics:
                net = lab.network(nic.network)
                if net is not None and net.mode is Mode.ISOLATED and nic.gateway is None \
                        and not any(r.is_default for r in vm.routes):
                    defaults = [r for r in config["ethernets"][nic.name].get("routes", [])
                                if ip_network(r["to"]).prefixlen == 0]
                    assert defaults == [], (case, vm.name, nic.name)


def test_the_seed_iso_is_labelled_cidata_and_holds_the_three_files() -> None:
    pytest.importorskip("pycdlib")
    from topoc.deploy.seed import iso_image, read_iso

    lab = compiled("guests")
    files = cloudinit.seed(lab, _vm(lab, "web"))
    label, read = read_iso(iso_image(files))
    assert label == "cidata" and read == files


def test_ipv6_routes_go_on_the_nic_that_reaches_their_gateway(tmp_path: Path) -> None:
    """An IPv6 `route` (and a default one) lands on the nic whose IPv6 subnet holds its
    next hop, after the IPv4 routes, as netplan reads it."""
    lab = compiled("dualstack")
    app = _vm(lab, "app")
    routes = (*app.routes, Route(ip_network("fd00:20::/48"), ip_address("fd00:103::1")),
              Route(ip_network("fd00:30::/48"), ip_address("fd00:6::9")))
    edited = replace(lab, vms=tuple(replace(v, routes=routes) if v.name == "app" else v for v in lab.vms))
    config = yaml.safe_load(cloudinit.network_config(edited, _vm(edited, "app")))
    assert config["ethernets"]["eth1"]["routes"] == [{"to": "10.20.0.0/16", "via": "10.10.103.1"},
                                                     {"to": "fd00:20::/48", "via": "fd00:103::1"}]
    assert config["ethernets"]["eth2"]["routes"] == [{"to": "fd00:30::/48", "via": "fd00:6::9"}]
    # The IPv6 default route is `gateway6` (cloud-init's parser breaks `to: "::/0"`).
    assert config["ethernets"]["eth0"]["routes"] == [{"to": "0.0.0.0/0", "via": "10.10.101.100"}]
    assert config["ethernets"]["eth0"]["gateway6"] == "2001:db8:a::1"
    require_tool("netplan")
    networkd = _netplan(cloudinit.network_config(edited, _vm(edited, "app")), tmp_path)
    eth1 = networkd["eth1"]
    assert {(eth1[s]["Destination"], eth1[s]["Gateway"]) for s in eth1.sections() if s.startswith("Route")} == {
        ("10.20.0.0/16", "10.10.103.1"), ("fd00:20::/48", "fd00:103::1")}

