"""Deploy's plan for guests and the host table without a daemon: libvirt's test driver
(a private copy per test) stands in for the host; a remote URI is only named."""

from __future__ import annotations

from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from conftest import ROOT  # noqa: E402
from deploy_helpers import compile_lab, private_test_host  # noqa: E402
from topoc.backends import cloudinit  # noqa: E402
from topoc.compiler import compile_file  # noqa: E402
from topoc.deploy import engine as deploy  # noqa: E402
from topoc.deploy.records import MemoryRecords  # noqa: E402

GUESTS = ROOT / "tests/golden/build/guests/input.topo"


def _lab(path: Path):
    result = compile_file(str(path))
    assert result.ok and result.lab is not None
    return result.lab


def test_plan_lists_pool_overlays_seeds_and_says_the_forward_is_not_applied(tmp_path):
    lab = _lab(GUESTS)
    target = deploy.connect(private_test_host(tmp_path))
    plan = deploy.make_plan(lab, target)
    changes = {(c.action, c.kind, c.name) for c in plan.changes}
    pool = "guestlab-images"
    assert ("create", "pool", pool) in changes
    assert ("create", "volume", f"{pool}/guestlab-web.qcow2") in changes
    assert ("create", "volume", f"{pool}/guestlab-app_1.qcow2") in changes
    assert ("create", "volume", f"{pool}/guestlab-tiny.qcow2") not in changes, "no image, no overlay"
    for vm in lab.vms:
        assert ("create", "volume", f"{pool}/{cloudinit.seed_volume(lab, vm)}") in changes
    assert any("forward tcp 2222 to web:22 not applied" in note for note in plan.notes)
    # Applied and planned again: in sync, volumes included.
    deploy.apply(lab, target)
    again = deploy.make_plan(lab, target)
    assert again.changes == []
    assert {c.kind for c in again.in_sync} >= {"pool", "volume", "network", "domain"}
    removed, _ = deploy.destroy(lab.name, target)
    assert {c.kind for c in removed} >= {"pool", "volume"}
    assert pool not in {p.name() for p in target.conn.listAllStoragePools(0)}


def test_an_existing_pool_named_with_pool_is_used_and_never_removed(tmp_path):
    lab = _lab(GUESTS)
    target = deploy.connect(private_test_host(tmp_path))
    mine = target.conn.storagePoolDefineXML(
        "<pool type='dir'><name>mine</name><target><path>/mine</path></target></pool>", 0)
    mine.create(0)
    plan = deploy.apply(lab, target, pool="mine")
    assert not any(c.kind == "pool" for c in plan.changes)
    assert "guestlab-web.qcow2" in mine.listVolumes()
    dom = target.conn.lookupByName("guestlab-web").XMLDesc(0)
    assert "pool='mine'" in dom
    deploy.destroy(lab.name, target)
    assert mine.isActive() and mine.listVolumes() == []


def test_a_missing_pool_named_with_pool_is_refused(tmp_path):
    target = deploy.connect(private_test_host(tmp_path))
    plan = deploy.make_plan(_lab(GUESTS), target, pool="nowhere")
    assert [d.code for d in plan.conflicts] == ["no-such-pool"]


def test_forwards_on_a_remote_uri_are_refused_not_dropped(tmp_path):
    """A remote host's firewall is beyond libvirt's API: deploy says so, with a fix."""
    local = deploy.connect(private_test_host(tmp_path))
    remote = deploy.Target(local.conn, "qemu+ssh://kvm1.example/system", MemoryRecords("qemu+ssh://kvm1.example/system"))
    lab = _lab(ROOT / "examples/nat.topo")
    plan = deploy.make_plan(lab, remote)
    [conflict] = plan.conflicts
    assert conflict.code == "remote-host-firewall"
    assert "forward tcp 2222 to vm0:22" in conflict.message
    assert conflict.span.line == next(i for i, line in enumerate(
        (ROOT / "examples/nat.topo").read_text().splitlines(), 1) if line.startswith("forward"))
    with pytest.raises(deploy.Refused):
        deploy.apply(lab, remote)


def test_a_lab_without_guests_reads_no_storage(tmp_path):
    lab = compile_lab(tmp_path, "lab plain\nhost h {\n}\nnetwork n on h {\n    mode isolated\n}\n"
                                "vm v on h {\n    nic on n\n}\n")
    target = deploy.connect(private_test_host(tmp_path))
    plan = deploy.make_plan(lab, target)
    assert not any(c.kind in ("pool", "volume", "table") for c in plan.changes + plan.in_sync)


def test_a_remembered_test_host_is_still_no_host_with_a_firewall(tmp_path):
    """test:///default kept between commands is still libvirt's test driver: deploy runs
    no nft or iptables on this machine for it, and says so."""
    target = deploy.connect("test:///default", state_dir=tmp_path / "state", remember_test_host=True)
    plan = deploy.make_plan(_lab(ROOT / "examples/nat.topo"), target)
    assert not any(c.kind in ("table", "iptables-rule") for c in plan.changes)
    assert any("forward tcp 2222 to vm0:22 not applied" in note for note in plan.notes)


def test_masquerade_is_a_host_table_step_too(tmp_path):
    lab = _lab(ROOT / "examples/routed-masquerade.topo")
    target = deploy.connect(private_test_host(tmp_path))
    plan = deploy.make_plan(lab, target)
    masqueraded = [n.name for n in lab.networks if n.masquerade]
    assert masqueraded
    assert any(f"masquerade of network {masqueraded[0]}" in note for note in plan.notes)
