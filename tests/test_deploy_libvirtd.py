"""topoc.deploy.engine against a real libvirtd (qemu:///system), started in its own namespaces
by tests/libvirtd_fixture.py: real bridges, real dnsmasq, real iptables rules, none of
them on the machine's own network.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from deploy_helpers import Calls, Counting, compile_lab, snapshot  # noqa: E402
from libvirtd_fixture import Libvirtd, libvirtd  # noqa: E402,F401
from topoc.deploy import engine as deploy  # noqa: E402

RUN = uuid.uuid4().hex[:5]  # names unique to this test run
LAB = f"r{RUN}"

LAB_TEXT = f"""\
lab {LAB}

network lan {{
    mode external
    subnet 192.168.101.0/24
}}

host kvm1 {{
    nic eth0 on lan address 192.168.101.11 gateway 192.168.101.1
}}

network nat on kvm1 {{
    mode nat via eth0
    bridge rn{RUN}
    address 10.61.1.1/24
    dhcp 10.61.1.100 - 10.61.1.200
    dns on
}}

network iso on kvm1 {{
    mode isolated
    bridge ri{RUN}
    subnet 10.61.2.0/24
}}

vm one on kvm1 {{
    memory 128MiB
    nic eth0 on nat address 10.61.1.10
    nic eth1 on iso address 10.61.2.10
}}

vm two on kvm1 {{
    memory 128MiB
    nic eth0 on nat address 10.61.1.11
    nic eth1 on iso address 10.61.2.11
}}
"""

THIRD_VM = """
vm three on kvm1 {
    memory 128MiB
    nic eth0 on nat address 10.61.1.12
}
"""

KEEP = f"keep{RUN}"


@pytest.fixture
def target(libvirtd: Libvirtd, tmp_path: Path):
    """A connection to the namespaced daemon with a network of its own that is not the
    lab's; afterwards everything named for this run is removed, pass or fail."""
    opened = deploy.connect(libvirtd.uri, state_dir=tmp_path / "state")
    keep = opened.conn.networkDefineXML(
        f"<network><name>{KEEP}</name><bridge name='rk{RUN}'/>"
        "<ip address='10.61.9.1' prefix='24'/></network>")
    keep.create()
    try:
        yield opened
    finally:
        _remove_everything_of_this_run(opened.conn)
        opened.conn.close()


def _remove_everything_of_this_run(conn) -> None:
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(f"{LAB}-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for net in conn.listAllNetworks(0):
        if net.name().startswith(f"{LAB}-") or net.name() == KEEP:
            if net.isActive():
                net.destroy()
            net.undefine()


def _links(libvirtd: Libvirtd) -> dict[str, str]:
    """Interface name -> its flags, inside the daemon's namespace."""
    links = {}
    for line in libvirtd.run("ip", "-o", "link", "show").splitlines():
        _, name, rest = line.split(":", 2)
        links[name.strip().split("@")[0]] = rest.split(">")[0]
    return links


def _dnsmasq_of(libvirtd: Libvirtd, network: str) -> set[int]:
    return {pid for pid, cmd in libvirtd.processes("dnsmasq").items() if f"/{network}.conf" in cmd}


def test_deploy_redeploy_live_update_and_destroy_on_a_real_daemon(libvirtd, target, tmp_path):
    lab = compile_lab(tmp_path, LAB_TEXT)
    keep_before = snapshot(target.conn)["networks"][KEEP]

    deploy.apply(lab, target)
    nat, iso = (target.conn.networkLookupByName(f"{LAB}-{n}") for n in ("nat", "iso"))
    assert nat.isActive() and nat.autostart() and iso.isActive() and iso.autostart()
    links = _links(libvirtd)
    assert "UP" in links[f"rn{RUN}"].split(",") and "UP" in links[f"ri{RUN}"].split(",")
    dnsmasq = _dnsmasq_of(libvirtd, f"{LAB}-nat")
    assert dnsmasq, "libvirt runs dnsmasq for the NAT network"
    assert {d.name() for d in target.conn.listAllDomains(0)} >= {f"{LAB}-one", f"{LAB}-two"}
    uuids = (nat.UUIDString(), iso.UUIDString())

    # Again: nothing to do, nothing restarted (same dnsmasq), same UUIDs.
    assert deploy.make_plan(lab, target).changes == []
    before = snapshot(target.conn)
    assert deploy.apply(lab, target).changes == []
    assert snapshot(target.conn) == before
    assert _dnsmasq_of(libvirtd, f"{LAB}-nat") == dnsmasq
    assert (nat.UUIDString(), iso.UUIDString()) == uuids

    rows = {r.name: r for r in deploy.status(lab, target)}
    assert rows[f"{LAB}-nat"].active and rows[f"{LAB}-nat"].bridge == f"rn{RUN}"
    assert rows[f"{LAB}-nat"].leases == (), "the real driver reports leases (none yet)"
    assert rows[f"{LAB}-one"].defined and not rows[f"{LAB}-one"].active

    # A new VM: its DHCP reservation goes into the running network live.
    edited = compile_lab(tmp_path, LAB_TEXT + THIRD_VM, "edited.topo")
    plan = deploy.make_plan(edited, target)
    assert sorted((c.action, c.name) for c in plan.changes) == [
        ("create", f"{LAB}-three"), ("update", f"{LAB}-nat")]
    deploy.apply(edited, target)
    assert "ip='10.61.1.12'" in nat.XMLDesc(0)
    hosts = (libvirtd.root / "lib" / "dnsmasq" / f"{LAB}-nat.hostsfile").read_text()
    assert "10.61.1.12" in hosts, "dnsmasq was told about the new reservation"
    assert _dnsmasq_of(libvirtd, f"{LAB}-nat") == dnsmasq, "the network was not restarted"
    assert deploy.make_plan(edited, target).changes == []

    removed, left_alone = deploy.destroy(LAB, target)
    assert len(removed) == 5 and left_alone == []
    assert not any(n.startswith(LAB) for n in (x.name() for x in target.conn.listAllNetworks(0)))
    assert not any(d.name().startswith(LAB) for d in target.conn.listAllDomains(0))
    links = _links(libvirtd)
    assert f"rn{RUN}" not in links and f"ri{RUN}" not in links
    assert _dnsmasq_of(libvirtd, f"{LAB}-nat") == set()
    assert snapshot(target.conn)["networks"][KEEP] == keep_before, "a network not the lab's survives"
    assert f"rk{RUN}" in links
    assert deploy.destroy(LAB, target) == ([], [])


def test_a_subnet_that_collides_with_a_running_network_is_refused(target, tmp_path):
    clash = LAB_TEXT.replace("10.61.1.", "10.61.9.")
    lab = compile_lab(tmp_path, clash)
    before = snapshot(target.conn)
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [diagnostic] = refused.value.diagnostics
    assert diagnostic.code == "host-subnet-clash" and f"libvirt network {KEEP}" in diagnostic.message
    assert snapshot(target.conn) == before
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.json"))


@pytest.mark.parametrize("fail_at", [3, 8], ids=["starting-the-first-network", "defining-a-domain"])
def test_a_failed_step_on_a_real_daemon_leaves_nothing_behind(libvirtd, target, tmp_path, fail_at):
    lab = compile_lab(tmp_path, LAB_TEXT)
    before = snapshot(target.conn)
    calls = Calls(fail_at)
    failing = deploy.Target(Counting(target.conn, calls), target.uri, target.records)
    with pytest.raises(deploy.DeployError, match="the host is as it was before"):
        deploy.apply(lab, failing)
    assert snapshot(target.conn) == before
    links = _links(libvirtd)
    assert f"rn{RUN}" not in links and f"ri{RUN}" not in links
    assert target.records.load(LAB).empty


def test_a_bridge_the_host_already_has_is_refused(libvirtd, target, tmp_path):
    """A bridge made outside libvirt (`ip link add`), which the daemon's interface driver
    reports: a lab that wants that name is refused before anything is defined."""
    bridge = f"rn{RUN}"
    libvirtd.run("ip", "link", "add", bridge, "type", "bridge")
    try:
        before = snapshot(target.conn)
        with pytest.raises(deploy.Refused) as refused:
            deploy.apply(compile_lab(tmp_path, LAB_TEXT), target)
        [diagnostic] = refused.value.diagnostics
        assert diagnostic.code == "host-bridge-clash"
        assert f"bridge {bridge} of {LAB}-nat is already used by host interface {bridge}" in diagnostic.message
        assert snapshot(target.conn) == before
    finally:
        libvirtd.run("ip", "link", "del", bridge)


def test_a_vm_that_cannot_start_rolls_the_whole_deploy_back(libvirtd, target, tmp_path):
    """A real failure, not an injected one: the VMs' disks do not exist (and the namespace
    runs no virtlogd), so libvirt refuses to start the first VM; the networks and
    domains defined before it are removed again."""
    before = snapshot(target.conn)
    with pytest.raises(deploy.DeployError) as failed:
        deploy.apply(compile_lab(tmp_path, LAB_TEXT), target, start_vms=True)
    message = str(failed.value)
    assert message.startswith(f"start domain {LAB}-one on {target.uri} failed: "), message
    assert "the host is as it was before" in message
    assert snapshot(target.conn) == before
    assert f"rn{RUN}" not in _links(libvirtd) and _dnsmasq_of(libvirtd, f"{LAB}-nat") == set()


VIRBR_TEXT = f"""\
lab {LAB}

host kvm1 {{
}}

network ten on kvm1 {{
    mode isolated
    bridge virbr10
    address 10.62.10.1/24
}}

network letter on kvm1 {{
    mode isolated
    bridge virbra
    address 10.62.11.1/24
}}

vm one on kvm1 {{
    memory 128MiB
    nic eth0 on ten address 10.62.10.10
    nic eth1 on letter address 10.62.11.10
}}
"""


def test_virbr_bridge_names_check_clean_and_a_real_daemon_starts_them(libvirtd, target, tmp_path):
    """libvirt recommends `virbr` bridge names ("recommended ... but not enforced",
    formatnetwork): `virbra` checks clean, `virbr10` warns only, and the daemon defines
    and starts both."""
    from topoc.compiler import compile_source

    diagnostics = compile_source(VIRBR_TEXT, "virbr.topo").diagnostics
    assert [(d.code, d.severity.value) for d in diagnostics] == [("bridge-virbr", "warning")]
    lab = compile_lab(tmp_path, VIRBR_TEXT)
    deploy.apply(lab, target)
    for name, bridge in (("ten", "virbr10"), ("letter", "virbra")):
        net = target.conn.networkLookupByName(f"{LAB}-{name}")
        assert net.isActive() and net.bridgeName() == bridge
        assert "UP" in _links(libvirtd)[bridge].split(",")
    deploy.destroy(LAB, target)
    assert not {"virbr10", "virbra"} & set(_links(libvirtd))


BRIDGED_TEXT = f"""\
lab {LAB}

network lan {{
    mode external
    subnet 192.168.101.0/24
}}

host kvm1 {{
    nic up{RUN} on lan address 192.168.101.11
}}

network lanbr on kvm1 {{
    mode bridged to up{RUN}
    bridge rb{RUN}
}}

vm one on kvm1 {{
    memory 128MiB
    nic eth0 on lanbr address 192.168.101.50/24
}}
"""


def test_a_bridged_network_needs_its_host_bridge_on_a_real_daemon(libvirtd, target, tmp_path):
    """Without bridge rb<run> on the host the deploy is refused, nothing changed (libvirt
    itself would start the network with nothing behind it); with it, it deploys."""
    lab = compile_lab(tmp_path, BRIDGED_TEXT)
    before = snapshot(target.conn)
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [missing] = refused.value.diagnostics
    assert missing.code == "host-bridge-missing" and f"bridge rb{RUN} of bridged network" in missing.message
    assert f"the host has no up{RUN} either" in missing.hint
    assert snapshot(target.conn) == before
    libvirtd.run("ip", "link", "add", f"up{RUN}", "type", "veth", "peer", "name", f"lp{RUN}")
    libvirtd.run("ip", "link", "add", f"rb{RUN}", "type", "bridge")
    libvirtd.run("ip", "link", "set", f"up{RUN}", "master", f"rb{RUN}")
    try:
        deploy.apply(lab, target)
        net = target.conn.networkLookupByName(f"{LAB}-lanbr")
        assert net.isActive() and net.bridgeName() == f"rb{RUN}"
        deploy.destroy(LAB, target)
        assert f"rb{RUN}" in _links(libvirtd), "a host bridge is the host's: destroy leaves it"
    finally:
        libvirtd.run("ip", "link", "del", f"rb{RUN}")
        libvirtd.run("ip", "link", "del", f"up{RUN}")
