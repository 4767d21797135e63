"""The libvirt backend's XML: golden files, libvirt's own schemas, and the details
that matter, read back with a real XML parser (no libvirt needed here)."""

from __future__ import annotations

import os

import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_tool
from test_libvirt_cases import CASES, GOLDEN_BUILD, artifacts, compiled, golden_dir, xml_artifacts
from topoc.backends import libvirt as backend
from topoc.compiler import compile_source
from topoc.model.ir import Mode

NS = {"topoc": backend.METADATA_NAMESPACE}


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def network(case: str, name: str) -> ET.Element:
    return parse(artifacts(case)[f"libvirt/networks/{name}.xml"])


def domain(case: str, name: str) -> ET.Element:
    return parse(artifacts(case)[f"libvirt/domains/{name}.xml"])


# --- golden files --------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_libvirt_artifacts_match_golden_files(case, golden):
    produced = artifacts(case)
    for path, text in sorted(produced.items()):
        golden.check(golden_dir(case).relative_to(GOLDEN_BUILD.parent) / path, text)
    on_disk = {str(p.relative_to(golden_dir(case))) for p in golden_dir(case).rglob("*")
               if p.is_file() and p.name != "input.topo"}
    stale = on_disk - set(produced)
    if golden.update:
        for path in stale:
            (golden_dir(case) / path).unlink()
    else:
        assert not stale, f"golden files the backend no longer makes: {sorted(stale)}"


# --- libvirt's schemas ---------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_xml_file_is_valid_for_virt_xml_validate(case, tmp_path):
    validator = require_tool("virt-xml-validate")
    files = xml_artifacts(case)
    assert files
    for path, text in sorted(files.items()):
        target = tmp_path / path.replace("/", "_")
        target.write_text(text, encoding="utf-8")
        kind = "network" if "/networks/" in path else "domain"
        run = subprocess.run([validator, str(target), kind], capture_output=True, text=True)
        assert run.returncode == 0, f"{case}: {path} is invalid:\n{run.stderr}{run.stdout}"


# --- what every file holds -----------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_file_starts_with_a_comment_naming_source_apply_and_undo(case):
    lab = compiled(case)
    for path, text in artifacts(case).items():
        head = text.split("\n\n")[0] if path.endswith(".txt") else text.split("-->")[0]
        assert lab.file in head, path
        if path.endswith(".xml"):
            assert text.startswith("<!--"), path
            assert "Apply" in head and "Undo" in head, path
        else:
            assert "Apply" in text and "Undo" in text, path


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_file_per_managed_network_and_vm_named_after_the_lab(case):
    lab = compiled(case)
    expected = {f"libvirt/networks/{n.name}.xml" for n in lab.networks if n.managed}
    expected |= {f"libvirt/domains/{v.name}.xml" for v in lab.vms}
    expected.add("libvirt/README.txt")
    assert set(artifacts(case)) == expected
    for path, text in xml_artifacts(case).items():
        root = parse(text)
        stem = path.rsplit("/", 1)[1].removesuffix(".xml")
        assert root.findtext("name") == f"{lab.name}-{stem}"
        owner = root.find("metadata/topoc:lab", NS)
        assert owner is not None and owner.attrib == {"name": lab.name, "source": lab.file}


def test_external_networks_produce_no_xml():
    lab = compiled("nat")
    lan = lab.network("lan")
    assert lan is not None and not lan.managed
    assert "libvirt/networks/lan.xml" not in artifacts("nat")
    with pytest.raises(ValueError, match="external"):
        backend.network_xml(lab, lan)


def test_nat_network_has_forward_dev_bridge_ip_dhcp_hosts_and_dns():
    net = network("nat", "natnet")
    assert net.find("forward").attrib == {"mode": "nat", "dev": "eth0"}
    assert net.find("bridge").attrib == {"name": "natbr0", "stp": "off", "delay": "0"}
    assert net.find("ip").attrib == {"address": "188.64.100.1", "netmask": "255.255.255.0"}
    assert net.find("ip/dhcp/range").attrib == {"start": "188.64.100.128", "end": "188.64.100.254"}
    vm0_mac = compiled("nat").node("vm0").nics[0].mac
    assert [h.attrib for h in net.findall("ip/dhcp/host")] == [
        {"mac": vm0_mac, "name": "vm0", "ip": "188.64.100.2"},
        {"mac": "52:54:00:6b:3c:58", "name": "vm1", "ip": "188.64.100.3"},
    ]
    assert net.find("dns").attrib == {"enable": "yes"}


def test_routed_network_forwards_through_its_uplink():
    net = network("routed", "routenet")
    assert net.find("forward").attrib == {"mode": "route", "dev": "eth0"}
    assert net.find("dns").attrib == {"enable": "no"}  # no `dns on`: dnsmasq serves DHCP only


def test_isolated_network_without_address_has_no_forward_and_no_ip():
    net = network("isolated", "isonet")
    assert net.find("forward") is None and net.find("ip") is None and net.find("dns") is None
    assert net.find("bridge").attrib == {"name": "br1", "stp": "off", "delay": "0"}


def test_host_only_network_has_an_ip_but_no_forward():
    net = network("hostonly", "hostnet")
    assert net.find("forward") is None
    assert net.find("ip").get("address") == "10.10.102.1"
    assert len(net.findall("ip/dhcp/host")) == 2


def test_bridged_network_uses_the_host_bridge_without_stp_mtu_or_ip():
    net = network("bridged", "lanbridge")
    assert net.find("forward").attrib == {"mode": "bridge"}
    # libvirt refuses stp/delay/mtu/ip on a bridge it does not create.
    assert net.find("bridge").attrib == {"name": "br0"}
    assert net.find("mtu") is None and net.find("ip") is None


def test_open_network_takes_no_dev_and_keeps_its_mtu():
    net = network("models", "opennet")
    assert net.find("forward").attrib == {"mode": "open"}
    assert net.find("mtu").attrib == {"size": "9000"}
    assert net.find("bridge").get("name") == compiled("models").network("opennet").bridge


def test_routed_and_nat_without_uplink_have_no_dev():
    assert network("models", "routed").find("forward").attrib == {"mode": "route"}
    assert network("models", "natty").find("forward").attrib == {"mode": "nat"}


def test_stp_on_is_kept_and_domain_and_dns_off_are_rendered():
    assert network("models", "routed").find("bridge").get("stp") == "on"
    natty = network("models", "natty")
    assert natty.find("domain").attrib == {"name": "lab.example"}
    assert natty.find("dns").attrib == {"enable": "no"}


def test_dhcp_host_of_a_vm_that_is_no_valid_hostname_has_no_name():
    hosts = network("models", "natty").findall("ip/dhcp/host")
    assert [h.attrib for h in hosts] == [
        {"mac": compiled("models").node("router_1").nics[0].mac, "ip": "10.3.0.10"}]


def test_network_without_dhcp_gets_no_dhcp_server():
    # mixlab's routed `svc` has static addresses but no `dhcp`: no <dhcp> at all.
    assert network("mixed", "svc").find("ip/dhcp") is None


def test_dual_stack_network_has_an_ipv6_ip_with_prefix_and_a_dhcpv6_range_without_hosts():
    net = network("dualstack", "natnet")
    ipv4, ipv6 = net.findall("ip")  # IPv4 first, as it always was
    assert ipv4.attrib == {"address": "188.64.100.1", "netmask": "255.255.255.0"}
    assert ipv6.attrib == {"family": "ipv6", "address": "fd00:64::1", "prefix": "64"}
    assert ipv6.find("dhcp/range").attrib == {"start": "fd00:64::100", "end": "fd00:64::1ff"}
    # libvirt refuses `mac` on an IPv6 host: the VM's IPv6 address is cloud-init's job.
    assert ipv6.findall("dhcp/host") == [] and len(ipv4.findall("dhcp/host")) == 1
    assert net.find("forward").attrib == {"mode": "nat", "dev": "eth0"}
    assert net.find("forward/nat") is None  # nat6 off: libvirt routes IPv6


def test_nat6_asks_libvirt_to_masquerade_ipv6():
    forward = network("dualstack", "nat6net").find("forward")
    assert forward.attrib == {"mode": "nat", "dev": "eth0"}
    assert [n.attrib for n in forward] == [{"ipv6": "yes"}]


def test_an_ipv6_only_network_has_one_ip_and_dnsmasq_settings():
    net = network("dualstack", "v6only")
    assert [ip.attrib for ip in net.findall("ip")] == [
        {"family": "ipv6", "address": "fd00:6::1", "prefix": "64"}]
    assert net.find("dns").attrib == {"enable": "no"}


def test_domain_memory_vcpus_os_console_disk_and_interfaces():
    dom = domain("nat", "vm0")
    assert dom.get("type") == "kvm"
    assert dom.find("memory").attrib == {"unit": "KiB"} and dom.findtext("memory") == "1048576"
    assert dom.findtext("vcpu") == "1"
    assert dom.find("os/type").attrib == {"arch": "x86_64", "machine": "pc"}
    assert dom.findtext("os/type") == "hvm"
    assert dom.find("devices/serial/target").get("port") == "0"
    assert dom.find("devices/console/target").attrib == {"type": "serial", "port": "0"}
    disk = dom.find("devices/disk")
    assert disk.attrib == {"type": "file", "device": "disk"}
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert disk.find("source").get("file") == "/var/lib/libvirt/images/vm0.qcow2"
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    (interface,) = dom.findall("devices/interface")
    assert interface.get("type") == "network"
    assert interface.find("source").attrib == {"network": "natlab-natnet"}
    assert interface.find("model").attrib == {"type": "virtio"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_domain_has_a_serial_console_and_the_guest_agent_channel(case):
    for path, text in xml_artifacts(case).items():
        if "/domains/" not in path:
            continue
        dom = parse(text)
        assert dom.find("devices/serial").get("type") == "pty"
        assert dom.find("devices/console/target").attrib == {"type": "serial", "port": "0"}
        (channel,) = dom.findall("devices/channel")
        assert channel.get("type") == "unix"
        assert channel.find("target").attrib == {"type": "virtio", "name": "org.qemu.guest_agent.0"}


def test_image_boots_its_overlay_volume_and_every_booted_vm_has_its_seed_cdrom():
    from topoc.backends import cloudinit

    lab = compiled("guests")
    web = domain("guests", "web")
    disk, cdrom = web.findall("devices/disk")
    assert disk.attrib == {"type": "volume", "device": "disk"}
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert disk.find("source").attrib == {"pool": "guestlab-images", "volume": "guestlab-web.qcow2"}
    assert cdrom.attrib == {"type": "volume", "device": "cdrom"}
    assert cdrom.find("readonly") is not None
    assert cdrom.find("source").attrib == {"pool": "guestlab-images",
                                           "volume": cloudinit.seed_volume(lab, lab.node("web"))}
    assert web.find("os/boot").get("dev") == "hd" and web.find("os/kernel") is None
    tiny = domain("guests", "tiny")  # a kernel and no image: the seed only
    assert [d.get("device") for d in tiny.findall("devices/disk")] == ["cdrom"]
    assert domain("nat", "vm0").find("devices/disk[@device='cdrom']") is None  # `disk`: as it was


def test_direct_kernel_boot_has_kernel_initrd_and_cmdline_in_os_and_no_boot_device():
    app = domain("guests", "app_1")
    assert app.findtext("os/kernel") == "/srv/boot/vmlinuz"
    assert app.findtext("os/initrd") == "/srv/boot/initrd.img"
    assert app.findtext("os/cmdline") == "root=LABEL=root rw console=ttyS0"
    assert app.find("os/boot") is None
    # The image path with a space reaches the README's shell line as one word.
    readme = artifacts("guests")["libvirt/README.txt"]
    assert "--backing-vol '/srv/images/appliance v2.raw' --backing-vol-format raw" in readme


def test_domain_type_and_pool_come_from_the_caller():
    from topoc.model.platform import TCG_PROFILE

    lab = compiled("guests")
    dom = parse(backend.domain_xml(lab, lab.node("web"), TCG_PROFILE, pool="default"))
    assert dom.get("type") == "qemu"
    assert {d.find("source").get("pool") for d in dom.findall("devices/disk")} == {"default"}


def test_domain_without_disk_has_none_and_raw_disk_by_extension():
    assert domain("bridged", "files").find("devices/disk") is None
    assert domain("models", "router_1").find("devices/disk/driver").get("type") == "raw"


def test_interfaces_in_nic_order_with_macs_and_named_models():
    lab = compiled("models")
    dom = domain("models", "router_1")
    interfaces = dom.findall("devices/interface")
    vm = lab.node("router_1")
    assert [i.find("source").get("network") for i in interfaces] == [
        f"models-{nic.network}" for nic in vm.nics]
    assert [i.find("mac").get("address") for i in interfaces] == [nic.mac for nic in vm.nics]
    assert [i.find("model").get("type") for i in interfaces] == ["virtio", "e1000e", "virtio",
                                                                 "virtio"]


def test_memory_in_decimal_units_is_rounded_up_to_whole_kib():
    # 1001MB = 1,001,000,000 bytes = 977,539.06 KiB
    assert domain("models", "router_1").findtext("memory") == "977540"


def test_uuids_are_stable_and_distinct():
    uuids = [parse(t).findtext("uuid") for case in CASES for t in xml_artifacts(case).values()]
    assert len(set(uuids)) == len(uuids)
    assert uuids == [parse(t).findtext("uuid") for case in CASES
                     for t in backend.generate(compiled(case)).values() if t.startswith("<!--")]


# --- hostile strings -----------------------------------------------------------------

HOSTILE_PATH = "/tmp/a<b>&c'd\"e\tf--g]]>h.qcow2"


def test_hostile_disk_path_survives_exactly():
    lab = compiled("hostile")
    assert lab.node("evil").disk == HOSTILE_PATH
    dom = domain("hostile", "evil")
    assert dom.find("devices/disk/source").get("file") == HOSTILE_PATH


def test_hostile_source_file_name_cannot_break_comment_or_metadata():
    source = (compile_source("lab x\nhost h {\n}\nnetwork n on h {\n mode isolated\n}\n"
                             "vm v on h {\n nic on n\n}\n", "ev--il<&'\">-.topo"))
    assert source.ok
    for path, text in backend.generate(source.lab).items():
        if path.endswith(".xml"):
            root = parse(text)  # well-formed despite `--` and a trailing `-` in a comment
            assert root.find("metadata/topoc:lab", NS).get("source") == "ev--il<&'\">-.topo"


def test_templates_refuse_a_missing_value():
    # StrictUndefined: a typo in a template is an error, never an empty attribute.
    from jinja2 import UndefinedError

    with pytest.raises(UndefinedError):
        backend._XML.from_string("<a b='{{ missing }}'/>").render()


def test_vm_nic_on_the_external_lan_is_a_macvtap_on_the_hosts_nic():
    dom = domain("onlan", "edge")
    lan, nat = dom.findall("devices/interface")
    assert lan.get("type") == "direct"
    assert lan.find("source").attrib == {"dev": "eth0", "mode": "bridge"}
    assert lan.find("mac").get("address") == compiled("onlan").node("edge").nics[0].mac
    assert nat.get("type") == "network" and nat.find("source").get("network") == "onlan-natnet"


def test_vm_on_a_lan_its_host_has_no_nic_on_is_refused_not_dropped():
    lab = compiled("nat")
    vm = lab.node("vm0")
    stray = replace(vm, host="elsewhere", nics=(replace(vm.nics[0], network="lan"),))
    with pytest.raises(ValueError, match="has no nic there"):
        backend.domain_xml(lab, stray)


def test_every_mode_renders():
    # Guard: a new Mode must be taught to the backend, not silently rendered isolated.
    assert set(backend.FORWARD_MODES) | {Mode.ISOLATED, Mode.EXTERNAL} == set(Mode)


def test_a_vm_with_two_nics_on_one_network_is_named_once():
    hosts = network("twonics", "n").findall("ip/dhcp/host")
    assert [(h.get("ip"), h.get("name")) for h in hosts] == [("10.9.0.5", "v"), ("10.9.0.6", None)]


def test_every_other_clean_test_topology_gives_valid_xml(tmp_path):
    from test_libvirt_cases import other_clean_topologies

    validator = require_tool("virt-xml-validate")
    checked = 0
    for source, files in other_clean_topologies().items():
        for path, text in files.items():
            target = tmp_path / f"{checked}.xml"
            target.write_text(text, encoding="utf-8")
            kind = "network" if "/networks/" in path else "domain"
            run = subprocess.run([validator, str(target), kind], capture_output=True, text=True)
            assert run.returncode == 0, f"{source}: {path} is invalid:\n{run.stderr}"
            checked += 1
    assert checked, "no other test topology compiled clean: the search is broken"


# --- any disk path, any source name --------------------------------------------------

# What a quoted string may hold (printable ASCII and tab; the grammar takes no newline).
PATH_TEXT = st.text(alphabet=st.sampled_from([chr(c) for c in range(32, 127)] + ["\t"]),
                    min_size=1, max_size=40)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=150, deadline=None)
@given(path=PATH_TEXT)
def test_any_disk_path_reads_back_exactly(path):
    source = (f"lab p\nhost h {{\n}}\nnetwork n {{\n    mode isolated\n}}\n"
              f"vm v {{\n    disk {_quoted(path)}\n    nic on n\n}}\n")
    result = compile_source(source, "p.topo")
    assert result.ok, [d.message for d in result.diagnostics]
    if not result.lab.vms[0].disk:
        return  # lowering refuses empty paths
    assert result.lab.vms[0].disk == path
    dom = parse(backend.domain_xml(result.lab, result.lab.vms[0]))
    # libvirt takes absolute paths only: a relative one is taken from the .topo file's folder.
    expected = path if os.path.isabs(path) else os.path.normpath(os.path.join(os.getcwd(), path))
    assert dom.find("devices/disk/source").get("file") == expected


@settings(max_examples=150, deadline=None)
@given(name=PATH_TEXT)
def test_any_source_file_name_keeps_the_xml_well_formed(name):
    renamed = replace(compiled("nat"), file=name)
    for vm in renamed.vms:
        root = parse(backend.domain_xml(renamed, vm))
        assert root.find("metadata/topoc:lab", NS).get("source") == name
    root = parse(backend.network_xml(renamed, renamed.network("natnet")))
    assert root.find("metadata/topoc:lab", NS).get("source") == name


# --- the platform profile -------------------------------------------------------------


def test_the_domain_type_comes_from_the_platform_profile(tmp_path):
    from topoc.model.platform import DEFAULT_PROFILE, TCG_PROFILE

    lab = compiled("nat")
    assert backend.generate(lab, DEFAULT_PROFILE) == backend.generate(lab)  # KVM by default
    tcg = backend.generate(lab, TCG_PROFILE)
    dom = parse(tcg["libvirt/domains/vm0.xml"])
    assert dom.get("type") == "qemu"
    assert dom.find("os/type").attrib == {"arch": "x86_64", "machine": "pc"}
    # Only the domain type moves: networks and the rest of the domain stay as they were.
    kvm = backend.generate(lab)
    assert {p for p in tcg if tcg[p] != kvm[p]} == {p for p in kvm if p.startswith("libvirt/domains/")}
    assert tcg["libvirt/domains/vm0.xml"].replace("type='qemu'>", "type='kvm'>", 1) == kvm[
        "libvirt/domains/vm0.xml"]
    validator = require_tool("virt-xml-validate")
    target = tmp_path / "vm0.xml"
    target.write_text(tcg["libvirt/domains/vm0.xml"], encoding="utf-8")
    run = subprocess.run([validator, str(target), "domain"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr + run.stdout
