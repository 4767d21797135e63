"""The issue's reproducers for checks that agree with libvirt and the kernel, and values
that now mean what a user means (topoc.checks.limits, the front end's bridged prefix and
relative disk paths)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import EXAMPLES, require_tool

from topoc.backends.libvirt import generate as libvirt_generate
from topoc.checks.limits import BRIDGE_MAX_PORTS
from topoc.compiler import compile_file, compile_source

NAT = (EXAMPLES / "nat.topo").read_text(encoding="utf-8")
BRIDGED = (EXAMPLES / "bridged.topo").read_text(encoding="utf-8")


def _codes(source: str) -> list[tuple[str, str, int]]:
    return [(d.code, d.severity.value, d.span.line) for d in compile_source(source, "t.topo").diagnostics]


def test_bridged_to_a_nic_the_host_lacks_is_an_error_at_the_nic() -> None:
    source = BRIDGED.replace("mode bridged to eth0", "mode bridged to eth1")
    [d] = [d for d in compile_source(source, "t.topo").diagnostics if d.code == "uplink-missing"]
    line = source.splitlines()[d.span.line - 1]
    assert line[d.span.column - 1: d.span.end_column - 1] == "eth1"
    assert "host kvm1's nics: `eth0`" in (d.hint or "")


def test_a_303_character_lab_name_is_refused_up_front() -> None:
    source = NAT.replace("lab natlab", "lab " + "n" * 303)
    codes = {c for c, _, _ in _codes(source)}
    assert codes == {"name-too-long"}
    # The longest name whose table, state folder and libvirt names all fit: clean.
    longest = 245 - len("-natnet")
    assert _codes(NAT.replace("lab natlab", "lab " + "n" * longest)) == []
    assert "name-too-long" in {c for c, _, _ in _codes(NAT.replace("lab natlab", "lab " + "n" * (longest + 1)))}


def _ports_lab(ports: int) -> str:
    vms = "\n".join(f"vm v{i} on kvm1 {{\n    nic on big\n}}" for i in range(ports))
    return ("lab ports\nhost kvm1 {\n}\nnetwork big on kvm1 {\n    mode isolated\n    bridge bigbr\n"
            "    address 10.8.0.1/20\n    dhcp 10.8.0.10 - 10.8.15.250\n}\n" + vms + "\n")


def test_a_bridge_takes_1023_ports_and_not_one_more() -> None:
    assert BRIDGE_MAX_PORTS == 1023
    assert "bridge-ports" not in {c for c, _, _ in _codes(_ports_lab(1023))}
    assert ("bridge-ports", "error", 4) in _codes(_ports_lab(1024))


def test_bridge_ports_match_the_kernel(tmp_path: Path) -> None:
    """The limit is the kernel's: in a network namespace, a bridge takes 1,023 taps and
    refuses the next with "Exchange full"."""
    from conftest import require_root
    require_root()
    ns = f"topoc-ports-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        script = ("ip link add b0 type bridge; i=0; while [ $i -le 1024 ]; do i=$((i+1)); "
                  "ip tuntap add dev t$i mode tap; ip link set t$i master b0 2>/dev/null || "
                  "{ echo $((i-1)); exit 0; }; done; echo none")
        out = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", script], capture_output=True,
                             text=True, timeout=300, check=False).stdout.strip()
        assert out == str(BRIDGE_MAX_PORTS)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_virbr_names() -> None:
    clean = NAT.replace("bridge natbr0", "bridge virbra")
    assert _codes(clean) == []
    assert _codes(NAT.replace("bridge natbr0", "bridge virbr10")) == [("bridge-virbr", "warning", 21)]


def test_a_domain_without_dns_warns_and_with_dns_is_clean() -> None:
    source = NAT.replace("    dns on\n", "    domain lab.example\n")
    assert _codes(source) == [("domain-without-dns", "warning", 19)]
    assert _codes(NAT.replace("    dns on\n", "    dns on\n    domain lab.example\n")) == []


def test_a_bridged_vm_address_takes_the_lan_prefix() -> None:
    result = compile_source(BRIDGED.replace("192.168.101.50/24", "192.168.101.50"), "b.topo")
    assert result.ok and result.diagnostics == []
    assert str(result.lab.node("files").nics[0].address) == "192.168.101.50/24"  # type: ignore[union-attr]


def test_a_relative_disk_is_taken_from_the_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "labs"
    folder.mkdir()
    path = folder / "rel.topo"
    path.write_text(NAT.replace("disk /var/lib/libvirt/images/vm0.qcow2", "disk vm0.qcow2")
                    .replace("disk /var/lib/libvirt/images/vm1.qcow2", 'disk "../images/vm 1.qcow2"'))
    result = compile_file(str(path))
    assert result.ok
    assert result.lab.node("vm0").disk == "vm0.qcow2"  # type: ignore[union-attr]  # as written
    domains = {Path(k).name: v for k, v in libvirt_generate(result.lab).items()  # type: ignore[arg-type]
               if k.startswith("libvirt/domains/")}
    assert f"<source file='{folder / 'vm0.qcow2'}'/>" in domains["vm0.xml"]
    assert f"<source file='{tmp_path / 'images' / 'vm 1.qcow2'}'/>" in domains["vm1.xml"]
    validate = require_tool("virt-xml-validate")
    for name, text in domains.items():
        xml = tmp_path / name
        xml.write_text(text)
        done = subprocess.run([validate, str(xml), "domain"], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("disk", ["~/vm.qcow2", '"~root/vm.qcow2"', "~"])
def test_a_tilde_disk_warns_that_it_is_not_expanded(disk: str) -> None:
    source = NAT.replace("disk /var/lib/libvirt/images/vm0.qcow2", f"disk {disk}")
    [d] = compile_source(source, "t.topo").diagnostics
    assert (d.code, d.severity.value) == ("invalid-value", "warning")
    assert "which topoc does not expand" in d.message and "absolute path" in (d.hint or "")
    assert compile_source(source.replace(f"disk {disk}", "disk a~b.qcow2"), "t.topo").diagnostics == []


def test_an_exact_libvirt_name_is_the_one_measured_not_the_lab_prefixed_one() -> None:
    """`name NAME` replaces `<lab>-<vm>`: a long lab name no longer makes that VM's
    domain name too long, while a VM without `name` in the same lab still is."""
    from topoc.compiler import compile_source

    lab = "l" * 240
    source = (f"lab {lab}\nhost kvm1 {{\n}}\nnetwork net on kvm1 {{\n    mode isolated\n}}\n"
              f"vm {'v' * 20} on kvm1 {{\n    name short\n    nic on net\n}}\n"
              f"vm {'w' * 20} on kvm1 {{\n    nic on net\n}}\n")
    too_long = [d for d in compile_source(source, "case.topo").diagnostics if d.code == "name-too-long"]
    assert [d.span.line for d in too_long] == [11], too_long
