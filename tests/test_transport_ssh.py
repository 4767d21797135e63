"""Host-level steps over the URI's own transport, for real: two sandboxed libvirtds,
each with an sshd in its namespaces (tests/sshd_fixture.py), reached from a workstation
namespace over a LAN bridge. libvirt's qemu+ssh:// connects through them (libvirt 9's
ssh transport runs `virt-ssh-helper` on the remote side, or `nc -U SOCKET` with
proxy=netcat), and topoc's host steps run over the same ssh, as journal steps that a
failure undoes."""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid

import pytest

pytest.importorskip("libvirt")

from sshd_fixture import ssh_lab  # noqa: F401

from topoc.deploy.transport import LOCAL, NoTransport, ssh_prefix, transport_for
from topoc.model.uri import parse_uri

RUN = uuid.uuid4().hex[:5]


def test_the_transport_of_a_uri():
    assert transport_for("qemu:///system") is LOCAL
    assert transport_for("qemu+unix:///system?socket=/x") is LOCAL
    ssh = transport_for("qemu+ssh://root@10.0.0.2:2222/system?keyfile=/k&no_tty=1")
    assert ssh.prefix == ("ssh", "-o", "BatchMode=yes", "-p", "2222", "-i", "/k", "-T", "--",
                          "root@10.0.0.2")
    assert ssh.argv(["ip", "link", "add", "a b"]) == [*ssh.prefix, "ip link add 'a b'"]
    with pytest.raises(NoTransport):
        transport_for("qemu+tls://kvm2/system")
    assert ssh_prefix(parse_uri("qemu+ssh://h/system?command=/opt/ssh"))[0] == "/opt/ssh"


def test_local_steps_run_in_a_journal_and_roll_back():
    """A failing step undoes the steps before it (here: files, on this machine)."""
    import tempfile
    from pathlib import Path

    from topoc.deploy.engine import Journal
    from topoc.deploy.transport import HostCommandError, HostStep, run_steps

    with tempfile.TemporaryDirectory() as directory:
        made = Path(directory) / "made"
        steps = [HostStep("make a file", ("touch", str(made)), ("rm", str(made)),
                          done=("test", "-e", str(made))),
                 HostStep("fail", ("false",))]
        journal = Journal()
        with pytest.raises(HostCommandError):
            run_steps(steps, LOCAL, journal.run)
        assert made.exists()
        assert journal.rollback() == []
        assert not made.exists()
        # Already in place: not done again (a second deploy changes nothing).
        made.touch()
        assert run_steps(steps[:1], LOCAL, Journal().run) == []


def _python(ws, code: str):
    import sys

    return ws.run(sys.executable, "-c", textwrap.dedent(code))


@pytest.mark.parametrize("proxy", ["", "&proxy=netcat", "&proxy=native"],
                         ids=["auto", "netcat", "virt-ssh-helper"])
def test_libvirt_connects_over_ssh_to_each_sandboxed_daemon(ssh_lab, proxy):
    import libvirt

    ws, hosts = ssh_lab
    marks = []
    for i, host in enumerate(hosts):
        conn = libvirt.open(host.daemon.uri)  # the daemon's own socket, from this machine
        marks.append(conn.networkDefineXML(f"<network><name>mark{RUN}{i}</name></network>"))
        conn.close()
    log = hosts[0].ssh_command.parent / "ssh.log"
    try:
        for i, host in enumerate(hosts):
            log.write_text("")
            out = ws.run("virsh", "-c", host.uri(extra=proxy), "net-list", "--all", "--name")
            assert out.returncode == 0, out.stderr
            assert {n for n in out.stdout.split() if n.startswith("mark")} == {f"mark{RUN}{i}"}
            # What libvirt 9 runs on the remote side (https://libvirt.org/uri.html, `proxy`):
            # auto tries virt-ssh-helper and falls back to nc on the daemon's socket.
            remote = log.read_text()
            if proxy == "&proxy=netcat":
                assert "nc" in remote and "virt-ssh-helper" not in remote, remote
            else:
                assert "virt-ssh-helper" in remote, remote
    finally:
        for mark in marks:
            mark.undefine()


def test_host_steps_run_over_ssh_and_a_failure_undoes_them(ssh_lab):
    ws, hosts = ssh_lab
    kvm2 = hosts[1]
    link = f"tx{RUN}"
    out = _python(ws, f"""
        import json
        from topoc.deploy.engine import Journal
        from topoc.deploy.transport import HostCommandError, HostStep, run_steps, transport_for
        t = transport_for({kvm2.uri()!r})
        steps = [HostStep("add link", ("ip", "link", "add", {link!r}, "type", "bridge"),
                          ("ip", "link", "del", {link!r}), done=("ip", "link", "show", {link!r})),
                 HostStep("a step that fails", ("ip", "link", "add", {link!r}, "type", "bridge"))]
        journal = Journal()
        try:
            run_steps(steps, t, journal.run)
        except HostCommandError as e:
            failed = str(e)
        there = t.run(["ip", "-o", "link", "show", {link!r}], check=False).returncode == 0
        problems = journal.rollback()
        gone = t.run(["ip", "-o", "link", "show", {link!r}], check=False).returncode != 0
        print(json.dumps([failed, there, problems, gone, t.description]))
    """)
    assert out.returncode == 0, out.stderr
    failed, there, problems, gone, where = json.loads(out.stdout)
    assert "File exists" in failed and f"{kvm2.address} (over ssh)" in failed
    assert there and problems == [] and gone
    # It ran on kvm2 (the daemon's namespace), and nowhere else.
    assert link not in kvm2.daemon.run("ip", "-o", "link", "show")
    assert where == f"{kvm2.address} (over ssh)"


def test_one_deploy_over_ssh_to_two_hosts(ssh_lab, tmp_path):
    ws, hosts = ssh_lab
    lab = f"s{RUN}"
    path = tmp_path / "lab.topo"
    path.write_text(f"""lab {lab}
network lan {{
    mode external
    subnet 10.77.0.0/24
}}
host kvm1 {{
    connect {hosts[0].uri()}
    nic eth0 on lan address 10.77.0.11
}}
host kvm2 {{
    connect {hosts[1].uri()}
    nic eth0 on lan address 10.77.0.12
}}
network n1 on kvm1 {{
    mode nat via eth0
    bridge sn{RUN}
    address 10.63.1.1/24
}}
network n2 on kvm2 {{
    mode isolated
    bridge si{RUN}
    address 10.63.2.1/24
}}
vm one on kvm1 {{
    memory 128MiB
    nic eth0 on n1 address 10.63.1.10
}}
vm two on kvm2 {{
    memory 128MiB
    nic eth0 on n2 address 10.63.2.10
}}
""")
    import sys

    env = {"TOPOC_STATE_DIR": str(tmp_path / "state")}
    deploy = ws.run(sys.executable, "-m", "topoc", "deploy", str(path), env=env)
    assert deploy.returncode == 0, deploy.stderr
    import libvirt

    kvm1, kvm2 = (libvirt.open(h.daemon.uri) for h in hosts)
    try:
        assert {n.name() for n in kvm1.listAllNetworks(0)} >= {f"{lab}-n1"}
        assert f"{lab}-n2" not in {n.name() for n in kvm1.listAllNetworks(0)}
        assert {d.name() for d in kvm2.listAllDomains(0)} == {f"{lab}-two"}
        again = ws.run(sys.executable, "-m", "topoc", "deploy", str(path), env=env)
        assert again.stdout.count("in sync, nothing changed") == 2, again.stdout + again.stderr
        destroy = ws.run(sys.executable, "-m", "topoc", "destroy", str(path), env=env)
        assert destroy.returncode == 0, destroy.stderr
        assert not any(n.name().startswith(lab) for c in (kvm1, kvm2) for n in c.listAllNetworks(0))
        assert not any(d.name().startswith(lab) for c in (kvm1, kvm2) for d in c.listAllDomains(0))
    finally:
        kvm1.close()
        kvm2.close()


def _links(daemon) -> dict[str, str]:
    """Link name -> its `ip -d link` line, inside the daemon's namespace."""
    found = {}
    for line in daemon.run("ip", "-o", "-d", "link", "show").splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        found[name] = line
    return found


def test_a_network_on_two_hosts_is_joined_by_vxlan_over_ssh(ssh_lab, tmp_path):
    """deploy makes the VXLAN links (and kvm2's bridge) over ssh in each daemon's
    namespace; a frame from kvm2's bridge reaches kvm1's NAT gateway through the tunnel;
    a second deploy changes nothing; destroy takes links and bridge away."""
    import sys

    from topoc.model import naming

    ws, hosts = ssh_lab
    lab = f"v{RUN}"
    path = tmp_path / "span.topo"
    path.write_text(f"""lab {lab}
network lan {{
    mode external
    subnet 10.77.0.0/24
}}
host kvm1 {{
    connect {hosts[0].uri()}
    nic eth0 on lan address 10.77.0.11
}}
host kvm2 {{
    connect {hosts[1].uri()}
    nic eth0 on lan address 10.77.0.12
}}
network wan on kvm1, kvm2 {{
    mode nat via eth0
    bridge sw{RUN}
    address 10.64.0.1/24
}}
vm one on kvm1 {{
    memory 128MiB
    nic eth0 on wan address 10.64.0.10
}}
vm two on kvm2 {{
    memory 128MiB
    nic eth0 on wan address 10.64.0.11
}}
""")
    vxlan = naming.vxlan_name(naming.derived_vni(lab, "wan"))
    env = {"TOPOC_STATE_DIR": str(tmp_path / "state")}
    kvm1, kvm2 = hosts[0].daemon, hosts[1].daemon
    deploy = ws.run(sys.executable, "-m", "topoc", "deploy", str(path), env=env)
    try:
        assert deploy.returncode == 0, deploy.stderr
        assert f"create host link vxlan {vxlan}" in deploy.stdout
        assert f"create host link bridge sw{RUN}" in deploy.stdout
        one, two = _links(kvm1), _links(kvm2)
        assert f"master sw{RUN}" in one[vxlan] and "vxlan id" in one[vxlan]
        assert "local 10.77.0.11" in one[vxlan] and "dstport 4789" in one[vxlan]
        assert f"master sw{RUN}" in two[vxlan] and "local 10.77.0.12" in two[vxlan]
        assert "bridge" in two[f"sw{RUN}"]
        assert "dst 10.77.0.11" in kvm2.run("bridge", "fdb", "show", "dev", vxlan)
        # Through the tunnel: kvm2's bridge of the segment to kvm1's gateway on it.
        kvm2.run("ip", "addr", "add", "10.64.0.99/24", "dev", f"sw{RUN}")
        try:
            ping = subprocess.run(["nsenter", "-t", str(kvm2.init_pid), "-n", "ping", "-c", "1",
                                   "-W", "2", "10.64.0.1"], capture_output=True, text=True,
                                  timeout=10, check=False)
            assert ping.returncode == 0, ping.stdout + ping.stderr
        finally:
            kvm2.run("ip", "addr", "del", "10.64.0.99/24", "dev", f"sw{RUN}")
        again = ws.run(sys.executable, "-m", "topoc", "deploy", str(path), env=env)
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("in sync, nothing changed") == 2, again.stdout
        # A link that lost its bridge (libvirt restarted the network, say) is attached again.
        kvm1.run("ip", "link", "set", "dev", vxlan, "nomaster")
        repair = ws.run(sys.executable, "-m", "topoc", "deploy", str(path), env=env)
        assert repair.returncode == 0, repair.stderr
        assert f"create host link vxlan {vxlan}" in repair.stdout and repair.stdout.count("in sync") == 1
        assert f"master sw{RUN}" in _links(kvm1)[vxlan]
        status = ws.run(sys.executable, "-m", "topoc", "status", str(path), "--format", "json", env=env)
        links = {(h["host"], o["name"]): o["defined"] for h in json.loads(status.stdout)["hosts"]
                 for o in h["objects"] if o["kind"] == "host link"}
        assert len(links) == 3 and all(links.values()), links  # 2 VXLAN links, kvm2's bridge
    finally:
        destroy = ws.run(sys.executable, "-m", "topoc", "destroy", str(path), env=env)
    assert destroy.returncode == 0, destroy.stderr
    assert vxlan not in _links(kvm1) and vxlan not in _links(kvm2)
    assert f"sw{RUN}" not in _links(kvm2) and f"sw{RUN}" not in _links(kvm1)


def test_a_bridge_of_that_name_already_on_kvm2_refuses_the_deploy(ssh_lab, tmp_path):
    """kvm2 has a bridge of the spanning network's name that the lab did not make: the
    deploy is refused on every host, and the bridge is left alone."""
    import sys

    ws, hosts = ssh_lab
    lab = f"w{RUN}"
    path = tmp_path / "span.topo"
    path.write_text(f"""lab {lab}
network lan {{
    mode external
    subnet 10.77.0.0/24
}}
host kvm1 {{
    connect {hosts[0].uri()}
    nic eth0 on lan address 10.77.0.11
}}
host kvm2 {{
    connect {hosts[1].uri()}
    nic eth0 on lan address 10.77.0.12
}}
network seg on kvm1, kvm2 {{
    mode isolated
    bridge sx{RUN}
    subnet 10.66.0.0/24
}}
vm one on kvm1 {{
    memory 128MiB
    nic eth0 on seg address 10.66.0.10
}}
vm two on kvm2 {{
    memory 128MiB
    nic eth0 on seg address 10.66.0.11
}}
""")
    kvm1, kvm2 = hosts[0].daemon, hosts[1].daemon
    kvm2.run("ip", "link", "add", f"sx{RUN}", "type", "bridge")
    try:
        out = ws.run(sys.executable, "-m", "topoc", "deploy", str(path),
                     env={"TOPOC_STATE_DIR": str(tmp_path / "state")})
        assert out.returncode == 1, out.stdout + out.stderr
        assert "[host-bridge-clash]" in out.stderr and f"sx{RUN}" in out.stderr
        assert f"sx{RUN}" not in _links(kvm1), "kvm1 untouched"
        assert f"sx{RUN}" in _links(kvm2)
    finally:
        kvm2.run("ip", "link", "del", f"sx{RUN}")
