"""One lab on two real libvirtds (tests/libvirtd_fixture.py: two daemons, each in
network and mount namespaces of its own): one `topoc deploy --connect kvm1=URI1
--connect kvm2=URI2` puts each host's networks and domains on its own daemon and
nothing on the other; a second deploy changes nothing; `plan` is empty; `destroy`
leaves both as they were; a subnet clash on kvm2 refuses the whole deploy and leaves
kvm1 untouched; a failure on kvm2 puts kvm1 back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from deploy_helpers import Calls, Counting, compile_lab, snapshot  # noqa: E402
from libvirtd_fixture import Libvirtd, two_libvirtds  # noqa: E402,F401
from topoc.deploy import engine, multi  # noqa: E402

RUN = uuid.uuid4().hex[:5]
LAB = f"m{RUN}"

LAB_TEXT = f"""\
lab {LAB}

network lan {{
    mode external
    subnet 192.168.101.0/24
}}

host kvm1 {{
    nic eth0 on lan address 192.168.101.11 gateway 192.168.101.1
}}

host kvm2 {{
    nic eth0 on lan address 192.168.101.12 gateway 192.168.101.1
}}

network nat1 on kvm1 {{
    mode nat via eth0
    bridge mn{RUN}
    address 10.62.1.1/24
    dhcp 10.62.1.100 - 10.62.1.200
}}

network nat2 on kvm2 {{
    mode nat via eth0
    bridge mn{RUN}
    address 10.62.1.1/24
    dhcp 10.62.1.100 - 10.62.1.200
}}

network side on kvm2 {{
    mode isolated
    bridge ms{RUN}
    address 10.62.2.1/24
}}

vm one on kvm1 {{
    memory 128MiB
    nic eth0 on nat1 address 10.62.1.10
}}

vm two on kvm2 {{
    memory 128MiB
    nic eth0 on nat2 address 10.62.1.10
    nic eth1 on side address 10.62.2.10
}}
"""

KVM1 = {f"{LAB}-nat1", f"{LAB}-one"}
KVM2 = {f"{LAB}-nat2", f"{LAB}-side", f"{LAB}-two"}


def _names(conn) -> set[str]:
    return {n.name() for n in conn.listAllNetworks(0)} | {d.name() for d in conn.listAllDomains(0)}


def _links(daemon: Libvirtd) -> set[str]:
    return {line.split(":", 2)[1].strip().split("@")[0]
            for line in daemon.run("ip", "-o", "link", "show").splitlines()}


@pytest.fixture
def hosts(two_libvirtds, tmp_path: Path):
    one, two = two_libvirtds
    targets = [multi.HostTarget("kvm1", engine.connect(one.uri, state_dir=tmp_path / "state")),
               multi.HostTarget("kvm2", engine.connect(two.uri, state_dir=tmp_path / "state"))]
    try:
        yield targets
    finally:
        for t in targets:
            conn = t.target.conn if not isinstance(t.target.conn, Counting) else t.target.conn._real
            for dom in conn.listAllDomains(0):
                if dom.name().startswith(f"{LAB}-"):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
            for net in conn.listAllNetworks(0):
                if net.name().startswith(f"{LAB}-") or net.name() == f"theirs{RUN}":
                    if net.isActive():
                        net.destroy()
                    net.undefine()
            conn.close()


def topoc(*args: str, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topoc", *args], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "TOPOC_STATE_DIR": str(state)})


def test_one_command_deploys_each_host_on_its_own_daemon(two_libvirtds, hosts, tmp_path):
    one, two = two_libvirtds
    path = tmp_path / "lab.topo"
    path.write_text(LAB_TEXT)
    before = [snapshot(t.target.conn) for t in hosts]
    links_before = [_links(one), _links(two)]
    connect = ["--connect", f"kvm1={one.uri}", "--connect", f"kvm2={two.uri}"]
    state = tmp_path / "state"

    out = topoc("deploy", str(path), *connect, state=state)
    assert out.returncode == 0, out.stderr
    kvm1, kvm2 = (t.target.conn for t in hosts)
    assert {n for n in _names(kvm1) if n.startswith(LAB)} == KVM1
    assert {n for n in _names(kvm2) if n.startswith(LAB)} == KVM2
    # Real bridges, each in its own daemon's network namespace only.
    assert _links(one) - links_before[0] >= {f"mn{RUN}"} and f"ms{RUN}" not in _links(one)
    assert _links(two) - links_before[1] >= {f"mn{RUN}", f"ms{RUN}"}

    again = topoc("deploy", str(path), *connect, state=state)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("in sync, nothing changed") == 2
    plan = topoc("plan", str(path), *connect, "--format", "json", state=state)
    assert plan.returncode == 0, plan.stderr
    assert [(h["host"], h["changes"]) for h in json.loads(plan.stdout)["hosts"]] == [
        ("kvm1", []), ("kvm2", [])]
    status = topoc("status", str(path), *connect, "--format", "json", state=state)
    per_host = {h["host"]: {o["name"]: o["active"] for o in h["objects"]}
                for h in json.loads(status.stdout)["hosts"]}
    assert per_host == {"kvm1": {f"{LAB}-nat1": True, f"{LAB}-one": False},
                        "kvm2": {f"{LAB}-nat2": True, f"{LAB}-side": True, f"{LAB}-two": False}}

    destroy = topoc("destroy", str(path), *connect, state=state)
    assert destroy.returncode == 0, destroy.stderr
    assert [snapshot(t.target.conn) for t in hosts] == before
    assert [_links(one), _links(two)] == links_before


def test_a_subnet_clash_on_kvm2_refuses_the_whole_deploy(two_libvirtds, hosts, tmp_path):
    one, two = two_libvirtds
    theirs = hosts[1].target.conn.networkDefineXML(
        f"<network><name>theirs{RUN}</name><bridge name='mt{RUN}'/>"
        "<ip address='10.62.2.1' prefix='24'/></network>")
    theirs.create()
    path = tmp_path / "lab.topo"
    path.write_text(LAB_TEXT)
    before = [snapshot(t.target.conn) for t in hosts]
    out = topoc("deploy", str(path), "--connect", f"kvm1={one.uri}", "--connect", f"kvm2={two.uri}",
                state=tmp_path / "state")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[host-subnet-clash]" in out.stderr and f"libvirt network theirs{RUN}" in out.stderr
    assert "nothing was changed" in out.stderr
    assert [snapshot(t.target.conn) for t in hosts] == before, "kvm1 untouched, and kvm2"


def test_a_failure_on_kvm2_puts_kvm1_back(hosts, tmp_path):
    lab = compile_lab(tmp_path, LAB_TEXT)
    before = [snapshot(t.target.conn) for t in hosts]
    real = hosts[1].target.conn
    hosts[1].target.conn = Counting(real, Calls(fail_at=5))  # kvm2's 5th call: start network side
    with pytest.raises(engine.DeployError) as failed:
        multi.apply_all(lab, hosts)
    hosts[1].target.conn = real
    assert str(failed.value).startswith("host kvm2:"), failed.value
    assert "kvm1, deployed in this run, were put back" in str(failed.value)
    assert [snapshot(t.target.conn) for t in hosts] == before
    assert all(t.target.records.load(LAB).empty for t in hosts)
