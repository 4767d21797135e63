"""`name NAME` in a network or vm block: the object's libvirt name as is, no lab prefix.

From the language (parse, lower, diagnostics, fmt) to the XML (the object's <name> and
every <source network> that points at it) and libvirt's test driver taking it."""

from __future__ import annotations

import pytest

from topoc.backends.libvirt import generate
from topoc.compiler import compile_source
from topoc.deploy import facts as dx
from topoc.front.fmt import format_source

LAB = """\
lab hostlab

host kvm1 {
}

network natnet on kvm1 {
    name natnet
    mode nat
    bridge natbr0
    address 192.168.150.1/24
    dhcp 192.168.150.100 - 192.168.150.200
}

network spare on kvm1 {
    mode isolated
    bridge sparebr0
    subnet 10.9.0.0/24
}

vm web on kvm1 {
    name ubuntu22.04
    nic on natnet address 192.168.150.10
    nic on spare address 10.9.0.10
}

vm db on kvm1 {
    nic on natnet address 192.168.150.11
    nic on spare address 10.9.0.11
}
"""


def _compile(text: str):
    return compile_source(text, "t.topo")


def test_exact_names_lower_into_the_ir() -> None:
    result = _compile(LAB)
    assert result.ok, [d.message for d in result.diagnostics]
    lab = result.lab
    assert lab.network("natnet").exact_name == "natnet"
    assert lab.network("spare").exact_name is None
    assert lab.node("web").exact_name == "ubuntu22.04"
    assert lab.node("db").exact_name is None


def test_built_xml_uses_the_exact_names_everywhere() -> None:
    artifacts = generate(_compile(LAB).lab)
    natnet = dx.parse(artifacts["libvirt/networks/natnet.xml"])
    assert natnet.findtext("name") == "natnet"
    assert dx.parse(artifacts["libvirt/networks/spare.xml"]).findtext("name") == "hostlab-spare"
    web = dx.parse(artifacts["libvirt/domains/web.xml"])
    assert web.findtext("name") == "ubuntu22.04"
    assert [s.get("network") for s in web.iter("source")] == ["natnet", "hostlab-spare"]
    db = dx.parse(artifacts["libvirt/domains/db.xml"])
    assert db.findtext("name") == "hostlab-db"
    assert [s.get("network") for s in db.iter("source")] == ["natnet", "hostlab-spare"]
    readme = artifacts["libvirt/README.txt"]
    assert "virsh net-start natnet" in readme and "virsh undefine ubuntu22.04" in readme
    assert "as is (`name`): network natnet, domain ubuntu22.04" in readme


def test_fmt_keeps_the_name_statement() -> None:
    shuffled = LAB.replace("    name natnet\n    mode nat\n", "    mode nat\n        name   natnet\n")
    formatted, diagnostics = format_source(shuffled, "t.topo")
    assert not diagnostics
    assert "    name natnet\n" in formatted
    assert format_source(formatted, "t.topo")[0] == formatted


@pytest.mark.parametrize("value, message", [
    (".hidden", "cannot be a libvirt name"),
    ("a/b", "cannot be a libvirt name"),  # libvirt: "invalid char in name: /"
    ("a" * 251, "bytes long"),
])
def test_names_libvirt_or_topoc_refuse_are_invalid_values(value: str, message: str) -> None:
    result = _compile(LAB.replace("name ubuntu22.04", f"name {value}"))
    errors = [d for d in result.diagnostics if d.code == "invalid-value"]
    assert len(errors) == 1 and message in errors[0].message
    assert errors[0].span.line == 21 and errors[0].hint


def test_a_quoted_name_is_a_syntax_error() -> None:
    for value in ('"a b"', '"natnet"'):
        result = _compile(LAB.replace("name ubuntu22.04", f"name {value}"))
        assert [d.code for d in result.diagnostics] == ["syntax-error"], value


def test_name_twice_and_name_on_external_are_reported() -> None:
    twice = _compile(LAB.replace("    name natnet\n", "    name natnet\n    name other\n"))
    assert [d.code for d in twice.diagnostics] == ["duplicate-statement"]
    external = _compile(LAB + "network lan {\n    mode external\n    subnet 10.1.0.0/24\n    name lan\n}\n")
    assert [d.code for d in external.diagnostics] == ["invalid-value"]
    assert "does not apply to external network" in external.diagnostics[0].message


def test_name_in_a_host_block_says_where_it_belongs() -> None:
    result = _compile(LAB.replace("host kvm1 {\n", "host kvm1 {\n    name kvm1\n"))
    assert [d.code for d in result.diagnostics] == ["syntax-error"]
    assert "`network` or `vm`" in (result.diagnostics[0].hint or "")


def test_two_objects_with_one_libvirt_name_conflict() -> None:
    clash = LAB.replace("vm db on kvm1 {\n", "vm db on kvm1 {\n    name ubuntu22.04\n")
    clash = clash.replace("    subnet 10.9.0.0/24\n", "    subnet 10.9.0.0/24\n    name hostlab-x\n")
    clash += "network x on kvm1 {\n    mode isolated\n    bridge xbr0\n    subnet 10.8.0.0/24\n}\n"
    codes = [(d.code, d.span.line) for d in _compile(clash).diagnostics if d.code == "libvirt-name-conflict"]
    # db's `name` (line 28) is web's; x (line 32, prefixed: hostlab-x) is spare's `name`.
    assert sorted(codes) == [("libvirt-name-conflict", 28), ("libvirt-name-conflict", 32)]


def test_a_network_and_a_vm_may_share_a_libvirt_name() -> None:
    shared = LAB.replace("name ubuntu22.04", "name natnet")
    assert _compile(shared).ok


def test_the_test_driver_takes_the_exact_names() -> None:
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open("test:///default")
    artifacts = generate(_compile(LAB).lab)
    for path in ("libvirt/networks/natnet.xml", "libvirt/networks/spare.xml"):
        conn.networkDefineXML(artifacts[path])
    for path in ("libvirt/domains/web.xml", "libvirt/domains/db.xml"):
        conn.defineXML(artifacts[path])
    try:
        assert conn.lookupByName("ubuntu22.04").name() == "ubuntu22.04"
        assert conn.networkLookupByName("natnet").bridgeName() == "natbr0"
    finally:
        for name in ("ubuntu22.04", "hostlab-db"):
            conn.lookupByName(name).undefine()
        for name in ("natnet", "hostlab-spare"):
            conn.networkLookupByName(name).undefine()
