"""topoc.deploy.engine against libvirt's built-in test driver (no daemon).

Each test opens a private copy of test:///default's host (deploy_helpers explains why
not test:///default itself) and drives the whole flow through that one connection. The
driver's own objects (network `default`, domain `test`, interface `eth1`) are the
foreign objects that must survive.
"""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip("libvirt")

from conftest import example_files  # noqa: E402
from deploy_helpers import Calls, Counting, compile_lab, private_test_host, snapshot  # noqa: E402
from topoc.deploy import engine as deploy  # noqa: E402
from topoc.deploy.records import MemoryRecords  # noqa: E402

LAN = """\
network lan {
    mode external
    subnet 192.168.101.0/24
}

host kvm1 {
    nic eth0 on lan address 192.168.101.11 gateway 192.168.101.1
}
"""

# Three networks (NAT with DHCP, routed, isolated) and three VMs.
V1 = "lab tlab\n\n" + LAN + """
network front on kvm1 {
    mode nat via eth0
    bridge tfront0
    address 10.77.1.1/24
    dhcp 10.77.1.100 - 10.77.1.200
}

network back on kvm1 {
    mode routed via eth0
    bridge tback0
    address 10.77.2.1/24
}

network old on kvm1 {
    mode isolated
    bridge told0
    subnet 10.77.3.0/24
}

vm a on kvm1 {
    nic eth0 on front address 10.77.1.10
}

vm b on kvm1 {
    memory 1GiB
    nic eth0 on front address 10.77.1.11
    nic eth1 on back address 10.77.2.11
}

vm c on kvm1 {
    nic eth0 on old address 10.77.3.10
}
"""

# The edit of V1 that exercises every kind of change: a's reservation moves and d's is
# added (DHCP hosts, live), back's subnet moves (recreate), b's memory grows (domain
# update), network `old` and VM c go (removals), network `fresh` and VM d come.
V2 = "lab tlab\n\n" + LAN + """
network front on kvm1 {
    mode nat via eth0
    bridge tfront0
    address 10.77.1.1/24
    dhcp 10.77.1.100 - 10.77.1.200
}

network back on kvm1 {
    mode routed via eth0
    bridge tback0
    address 10.77.4.1/24
}

network fresh on kvm1 {
    mode isolated
    bridge tfresh0
    address 10.77.5.1/24
}

vm a on kvm1 {
    nic eth0 on front address 10.77.1.12
}

vm b on kvm1 {
    memory 2GiB
    nic eth0 on front address 10.77.1.11
    nic eth1 on back address 10.77.4.11
}

vm d on kvm1 {
    nic eth0 on front address 10.77.1.13
    nic eth1 on fresh address 10.77.5.13
}
"""


def open_private(directory, bridges=None):
    uri = private_test_host(directory, bridges)
    return deploy.Target(libvirt.open(uri), uri, MemoryRecords(uri))


@pytest.fixture
def target(tmp_path):
    opened = open_private(tmp_path)
    try:
        yield opened
    finally:
        opened.conn.close()


def counted(target, fail_at=0):
    calls = Calls(fail_at)
    return deploy.Target(Counting(target.conn, calls), target.uri, target.records), calls


def actions(plan):
    return sorted((c.action, c.kind, c.name) for c in plan.changes)


def test_plan_lists_creates_and_changes_nothing(tmp_path, target):
    lab = compile_lab(tmp_path, V1)
    before = snapshot(target.conn)
    plan = deploy.make_plan(lab, target)
    assert actions(plan) == [("create", "domain", "tlab-a"), ("create", "domain", "tlab-b"),
                             ("create", "domain", "tlab-c"), ("create", "network", "tlab-back"),
                             ("create", "network", "tlab-front"), ("create", "network", "tlab-old")]
    assert plan.conflicts == []
    assert snapshot(target.conn) == before
    assert plan.to_json()["changes"][0].keys() >= {"action", "kind", "name", "detail"}


def test_deploy_defines_autostarts_and_starts_networks_and_defines_domains(tmp_path, target):
    lab = compile_lab(tmp_path, V1)
    deploy.apply(lab, target)
    for name in ("tlab-front", "tlab-back", "tlab-old"):
        net = target.conn.networkLookupByName(name)
        assert net.isActive() and net.autostart() and net.isPersistent()
    front = target.conn.networkLookupByName("tlab-front")
    for name in ("tlab-a", "tlab-b", "tlab-c"):
        dom = target.conn.lookupByName(name)
        assert not dom.isActive(), "VMs start only with start_vms"
        assert 'name="tlab"' in dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                                             "https://topoc.dev/xmlns/libvirt/1").replace("'", '"')
    # The UUIDs are topoc's own, derived from the names: the same on every host.
    from topoc.model.naming import object_uuid
    assert front.UUIDString() == object_uuid("tlab", "network", "front")


def test_start_vms_starts_the_domains(tmp_path, target):
    lab = compile_lab(tmp_path, V1)
    deploy.apply(lab, target, start_vms=True)
    assert all(target.conn.lookupByName(f"tlab-{v}").isActive() for v in "abc")


def test_redeploy_changes_nothing(tmp_path, target):
    lab = compile_lab(tmp_path, V1)
    deploy.apply(lab, target, start_vms=True)
    uuids = {n.name(): n.UUIDString() for n in target.conn.listAllNetworks(0)}
    before = snapshot(target.conn)
    again, calls = counted(target)
    plan = deploy.apply(lab, again, start_vms=True)
    assert plan.changes == [] and plan.to_json() == {"changes": []}
    assert calls.log == [], "a redeploy makes no libvirt call that changes anything"
    assert snapshot(target.conn) == before
    assert {n.name(): n.UUIDString() for n in target.conn.listAllNetworks(0)} == uuids
    # The file named another way (./lab.topo) is the same lab: no change either.
    assert deploy.make_plan(compile_lab(tmp_path, V1.replace("lab tlab", "lab tlab  # same")), target).changes == []


def test_an_edited_file_gets_the_right_changes(tmp_path, target):
    deploy.apply(compile_lab(tmp_path, V1), target, start_vms=True)
    v2 = compile_lab(tmp_path, V2)
    plan = deploy.make_plan(v2, target, start_vms=True)
    by_name = {(c.kind, c.name): c for c in plan.changes}
    assert actions(plan) == [
        ("create", "domain", "tlab-d"), ("create", "network", "tlab-fresh"),
        ("recreate", "network", "tlab-back"), ("remove", "domain", "tlab-c"),
        ("remove", "network", "tlab-old"), ("update", "domain", "tlab-b"),
        ("update", "network", "tlab-front")]
    front = by_name[("network", "tlab-front")]
    assert "DHCP host entries, applied live" in front.detail and "10.77.1.12" in front.detail
    assert "-<host" in front.diff or "+      <host" in front.diff
    back = by_name[("network", "tlab-back")]
    assert "<ip>" in back.detail and "restarts" in back.detail and "10.77.4.1" in back.diff
    assert "next boot" in by_name[("domain", "tlab-b")].detail

    applied, calls = counted(target)
    deploy.apply(v2, applied, start_vms=True)
    front_calls = [method for owner, method in calls.log if owner == "tlab-front"]
    assert front_calls == ["update", "update"], "DHCP edits live, no restart of tlab-front"
    names = {n.name() for n in target.conn.listAllNetworks(0)}
    assert names == {"default", "tlab-front", "tlab-back", "tlab-fresh"}
    assert {d.name() for d in target.conn.listAllDomains(0)} == {"test", "tlab-a", "tlab-b", "tlab-d"}
    front_xml = target.conn.networkLookupByName("tlab-front").XMLDesc(0)
    assert "ip='10.77.1.12'" in front_xml and "ip='10.77.1.13'" in front_xml and "10.77.1.10'" not in front_xml
    assert "10.77.4.1" in target.conn.networkLookupByName("tlab-back").XMLDesc(0)
    assert target.conn.networkLookupByName("tlab-back").isActive()
    # Redefined: the next boot has 2 GiB; the running VM keeps what it booted with.
    b = target.conn.lookupByName("tlab-b")
    assert "<memory unit='KiB'>2097152</memory>" in b.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert deploy.make_plan(v2, target, start_vms=True).changes == []


def test_destroy_removes_only_the_lab_and_is_safe_twice(tmp_path, target):
    foreign = snapshot(target.conn)
    lab = compile_lab(tmp_path, V1)
    deploy.apply(lab, target, start_vms=True)
    removed, left_alone = deploy.destroy(lab.name, target)
    assert sorted((c.kind, c.name) for c in removed) == [
        ("domain", "tlab-a"), ("domain", "tlab-b"), ("domain", "tlab-c"),
        ("network", "tlab-back"), ("network", "tlab-front"), ("network", "tlab-old")]
    assert left_alone == []
    assert snapshot(target.conn) == foreign, "the driver's own default and test survive untouched"
    again, calls = counted(target)
    assert deploy.destroy(lab.name, again) == ([], [])
    assert calls.log == []


def test_foreign_objects_are_left_alone_through_every_command(tmp_path, target):
    target.conn.networkDefineXML("<network><name>someone-else</name><bridge name='other0'/>"
                                 "<ip address='10.200.0.1' prefix='24'/></network>").create()
    foreign = snapshot(target.conn)
    v1, v2 = compile_lab(tmp_path, V1), compile_lab(tmp_path, V2)
    deploy.apply(v1, target, start_vms=True)
    deploy.apply(v2, target)
    deploy.destroy(v1.name, target)
    assert snapshot(target.conn) == foreign


@pytest.mark.parametrize("kind", ["network", "domain"])
def test_an_object_with_the_labs_name_that_it_does_not_own_is_refused(tmp_path, target, kind):
    lab = compile_lab(tmp_path, V1)
    if kind == "network":
        target.conn.networkDefineXML("<network><name>tlab-front</name><bridge name='x0'/></network>")
    else:
        target.conn.defineXML("<domain type='test'><name>tlab-a</name><memory>1024</memory>"
                              "<os><type>hvm</type></os></domain>")
    before = snapshot(target.conn)
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [clash] = refused.value.diagnostics
    assert clash.code == "foreign-object" and "did not create" in clash.message
    assert clash.span.line > 0, "the diagnostic points into the file"
    assert snapshot(target.conn) == before
    assert deploy.destroy(lab.name, target) == ([], []), "destroy leaves it alone too"
    assert snapshot(target.conn) == before


def test_the_same_name_and_uuid_defined_by_hand_is_still_not_owned(tmp_path, target):
    """An object made by `virsh net-define` from `topoc build` output carries topoc's
    UUID, yet this lab did not create it: only the record makes it the lab's."""
    from topoc.backends.libvirt import network_xml

    lab = compile_lab(tmp_path, V1)
    target.conn.networkDefineXML(network_xml(lab, lab.network("front")))
    with pytest.raises(deploy.Refused):
        deploy.apply(lab, target)


def test_a_subnet_used_by_another_network_is_refused_before_anything_is_defined(tmp_path, target):
    # The test driver's own `default` network has 192.168.122.0/24.
    lab = compile_lab(tmp_path, V1.replace("10.77.2.1/24", "192.168.122.129/25")
                      .replace("10.77.2.11", "192.168.122.140"))
    before = snapshot(target.conn)
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [clash] = refused.value.diagnostics
    assert clash.code == "host-subnet-clash"
    assert "libvirt network default" in clash.message and "192.168.122.0/24" in clash.message
    assert snapshot(target.conn) == before
    assert target.records.load("tlab").empty


def test_a_subnet_of_a_host_interface_is_refused(tmp_path, target):
    # The test driver reports one host interface: eth1 with 192.168.0.5/24.
    lab = compile_lab(tmp_path, V1.replace("10.77.3.0/24", "192.168.0.0/24")
                      .replace("subnet 192.168.0.0/24", "address 192.168.0.1/24")
                      .replace("10.77.3.10", "192.168.0.10"))
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    assert [d.message for d in refused.value.diagnostics] == [
        f"subnet 192.168.0.0/24 of tlab-old overlaps 192.168.0.0/24 of host interface eth1 on {target.uri}"]


def test_a_bridge_used_by_another_network_is_refused(tmp_path, target):
    target.conn.networkDefineXML("<network><name>other</name><bridge name='tback0'/></network>")
    lab = compile_lab(tmp_path, V1)
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [clash] = refused.value.diagnostics
    assert clash.code == "host-bridge-clash" and "libvirt network other" in clash.message


def _mutating_calls(directory, scenario) -> int:
    base = open_private(directory)
    try:
        lab, setup = scenario
        if setup is not None:
            deploy.apply(setup, base, start_vms=True)
        counting, calls = counted(base)
        deploy.apply(lab, counting, start_vms=True)
        return len(calls.log)
    finally:
        base.conn.close()


@pytest.mark.parametrize("scenario_name", ["first deploy", "edited file"])
def test_a_failure_at_every_step_leaves_the_host_as_before(tmp_path, scenario_name):
    v1, v2 = compile_lab(tmp_path, V1, "v1.topo"), compile_lab(tmp_path, V2, "v2.topo")
    scenario = (v1, None) if scenario_name == "first deploy" else (v2, v1)
    steps = _mutating_calls(tmp_path, scenario)
    assert steps >= 10
    for fail_at in range(1, steps + 1):
        base = open_private(tmp_path)
        conn = base.conn
        try:
            lab, setup = scenario
            if setup is not None:
                deploy.apply(setup, base, start_vms=True)
            before, record_before = snapshot(conn), base.records.load("tlab").to_json()
            plan_before = deploy.make_plan(lab, base, start_vms=True).to_json()
            failing, calls = counted(base, fail_at)
            with pytest.raises(deploy.DeployError) as failed:
                deploy.apply(lab, failing, start_vms=True)
            message = str(failed.value)
            assert f"injected failure at mutating call {fail_at}" in message
            assert "the host is as it was before" in message, message
            assert snapshot(conn) == before, f"failure at step {fail_at} ({calls.log[fail_at - 1]})"
            assert base.records.load("tlab").to_json() == record_before
            assert deploy.make_plan(lab, base, start_vms=True).to_json() == plan_before
        finally:
            conn.close()


def test_a_rollback_that_cannot_finish_says_what_is_left(tmp_path, target):
    lab = compile_lab(tmp_path, V1)
    failing, calls = counted(target)
    # Fail the 4th call (after tlab-back is defined, autostarted and started), then every
    # later one too, so that undoing fails as well.
    calls.fail_at = 4
    original = calls.record

    def record(owner, method):
        if len(calls.log) >= 4:
            calls.fail_at = len(calls.log) + 1
        original(owner, method)

    calls.record = record
    with pytest.raises(deploy.DeployError) as failed:
        deploy.apply(lab, failing)
    message = str(failed.value)
    assert "rollback was incomplete" in message and "could not undo 'start network tlab-back'" in message


def test_importing_deploy_does_not_import_libvirt():
    import subprocess
    import sys

    code = "import sys, topoc.deploy.engine, topoc.deploy.report; assert 'libvirt' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_lab_on_several_hosts_needs_host(tmp_path, target):
    two = V1.replace("network old on kvm1", "network old on kvm2").replace(
        "vm c on kvm1", "vm c on kvm2") + "\nhost kvm2 {\n    nic eth0 on lan address 192.168.101.12\n}\n"
    lab = compile_lab(tmp_path, two)
    with pytest.raises(deploy.DeployError, match="--host"):
        deploy.make_plan(lab, target)
    deploy.apply(lab, target, host="kvm1")
    assert "tlab-old" not in {n.name() for n in target.conn.listAllNetworks(0)}
    plan = deploy.make_plan(lab, target, host="kvm2")
    assert actions(plan) == [("create", "domain", "tlab-c"), ("create", "network", "tlab-old")], \
        "kvm1's objects on the same connection are not removals"


def test_a_network_edited_by_hand_is_put_back(tmp_path, target):
    lab = compile_lab(tmp_path, V1)
    deploy.apply(lab, target)
    back = target.conn.networkLookupByName("tlab-back")
    edited = back.XMLDesc(0).replace("tback0", "handmade0")
    back.destroy()
    target.conn.networkDefineXML(edited).create()
    plan = deploy.make_plan(lab, target)
    [change] = plan.changes
    assert (change.action, change.name) == ("recreate", "tlab-back")
    assert "changed outside topoc (bridge handmade0, not tback0)" in change.detail
    deploy.apply(lab, target)
    assert "tback0" in target.conn.networkLookupByName("tlab-back").XMLDesc(0)
    assert deploy.make_plan(lab, target).changes == []


def test_after_an_interrupted_deploy_the_next_one_knows_its_objects(tmp_path, target):
    """topoc killed after writing its pending record and defining a network: the next
    run owns that network (the record names it with its UUID) and redefines it."""
    lab = compile_lab(tmp_path, V1)
    deploy.apply(lab, target)
    record = target.records.load("tlab")
    record.networks["tlab-back"] = deploy.Owned(record.networks["tlab-back"].uuid, None)
    target.records.save(record)
    plan = deploy.make_plan(lab, target)
    [change] = plan.changes
    assert (change.action, change.name) == ("recreate", "tlab-back")
    assert "no record of the XML it applied" in change.detail
    deploy.apply(lab, target)
    assert deploy.make_plan(lab, target).changes == []


def test_status_lists_owned_objects_the_file_dropped(tmp_path, target):
    deploy.apply(compile_lab(tmp_path, V1), target)
    smaller = compile_lab(tmp_path, V1.split("vm c on kvm1")[0].replace(
        "network old on kvm1 {\n    mode isolated\n    bridge told0\n    subnet 10.77.3.0/24\n}\n", ""), "small.topo")
    rows = {r.name: r for r in deploy.status(smaller, target)}
    assert rows["tlab-old"].owned and "no longer in the file" in rows["tlab-old"].note
    assert rows["tlab-c"].defined and "no longer in the file" in rows["tlab-c"].note
    assert rows["tlab-front"].active and rows["tlab-front"].bridge == "tfront0"


def test_a_failure_at_every_step_of_destroy_leaves_the_host_as_before(tmp_path):
    lab = compile_lab(tmp_path, V1)
    fail_at = 1
    while True:
        base = open_private(tmp_path)
        try:
            deploy.apply(lab, base, start_vms=True)
            before, record_before = snapshot(base.conn), base.records.load("tlab").to_json()
            failing, calls = counted(base, fail_at)
            try:
                deploy.destroy("tlab", failing)
            except deploy.DeployError as failed:
                assert "the host is as it was before" in str(failed), str(failed)
                assert snapshot(base.conn) == before, f"failure at step {fail_at}"
                assert base.records.load("tlab").to_json() == record_before
            else:
                break  # fail_at is past the last step: destroy ran to the end
        finally:
            base.conn.close()
        fail_at += 1
    assert fail_at == 13, "3 running domains (stop, undefine) and 3 networks (stop, undefine)"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_example_deploys_redeploys_in_sync_and_destroys(path, tmp_path):
    from topoc.compiler import compile_file
    from topoc.model.ir import Mode

    lab = compile_file(str(path)).lab
    # The host bridges the examples' bridged networks attach to, as a real host has them.
    bridges = {n.bridge: n.via for n in lab.networks if n.mode is Mode.BRIDGED}
    target = open_private(tmp_path, bridges)
    foreign = snapshot(target.conn)
    applied = deploy.apply(lab, target, start_vms=True)
    assert applied.changes and all(c.action == "create" for c in applied.changes)
    assert deploy.make_plan(lab, target, start_vms=True).changes == []
    assert all(row.defined and row.active and row.owned for row in deploy.status(lab, target))
    deploy.destroy(lab.name, target)
    assert snapshot(target.conn) == foreign


BRIDGED = "lab tbr\n\n" + LAN.replace("gateway 192.168.101.1\n", "gateway 192.168.101.1\n"
                                       "    nic eth1 on lan address 192.168.101.12\n") + """
network lanbr on kvm1 {
    mode bridged to eth1
    bridge tbr0
}

vm v on kvm1 {
    nic eth0 on lanbr address 192.168.101.50/24
}
"""


def test_a_bridged_network_whose_host_bridge_is_missing_is_refused(tmp_path, target):
    """The test host has a nic eth1 but no bridge tbr0: libvirt would define and start the
    network with nothing behind it. Refused before anything changes, naming the bridge."""
    lab = compile_lab(tmp_path, BRIDGED)
    before = snapshot(target.conn)
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [missing] = refused.value.diagnostics
    assert missing.code == "host-bridge-missing"
    assert "bridge tbr0 of bridged network tbr-lanbr does not exist on test://" in missing.message
    assert "with eth1 as its port" in missing.hint
    assert missing.span.line == BRIDGED.splitlines().index("    bridge tbr0") + 1
    assert snapshot(target.conn) == before
    assert deploy.make_plan(lab, target).conflicts == [missing]


def test_a_bridged_network_whose_nic_is_missing_too_names_the_hosts_interfaces(tmp_path, target):
    lab = compile_lab(tmp_path, BRIDGED.replace("bridged to eth1", "bridged to eth0"))
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [missing] = refused.value.diagnostics
    assert "the host has no eth0 either (its interfaces: eth1)" in missing.hint


def test_a_bridged_network_deploys_when_the_host_has_its_bridge(tmp_path):
    target = open_private(tmp_path, {"tbr0": "eth1"})
    try:
        lab = compile_lab(tmp_path, BRIDGED)
        applied = deploy.apply(lab, target)
        assert ("create", "tbr-lanbr") in {(c.action, c.name) for c in applied.changes}
        assert target.conn.networkLookupByName("tbr-lanbr").isActive()
    finally:
        target.conn.close()
