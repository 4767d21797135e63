"""`topoc plan|deploy|status|destroy` as a user runs them: separate processes, exit codes
0 (done), 1 (the lab clashes with the host, or has errors), 2 (libvirt unreachable),
and never a traceback. Each command is one process; topoc keeps test:///default's host
between commands in the state folder, which is the test's own (conftest), so every test
starts from libvirt's default host.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import EXAMPLES

pytest.importorskip("libvirt")


def topoc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topoc", *args], capture_output=True, text=True,
                          timeout=60, env=env)


NAT = str(EXAMPLES / "nat.topo")


def test_plan_json_lists_each_change():
    out = topoc("plan", NAT, "--format", "json")
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert [(c["action"], c["kind"], c["name"]) for c in document["changes"]] == [
        ("create", "network", "natlab-natnet"), ("create", "domain", "natlab-vm0"),
        ("create", "domain", "natlab-vm1")]
    assert all({"action", "kind", "name", "detail"} <= c.keys() for c in document["changes"])
    assert document["conflicts"] == []
    assert "in-memory test driver" in out.stderr, "the user is told nothing persists"


def test_deploy_with_status_shows_the_result_in_the_same_run():
    out = topoc("deploy", NAT, "--start-vms", "--status")
    assert out.returncode == 0, out.stderr
    assert "+ create network natlab-natnet" in out.stdout
    status = out.stdout.split("lab natlab on test:///default:\n", 1)[1]
    rows = {line.split()[1]: line.split() for line in status.splitlines()[1:]}
    assert rows["natlab-natnet"][2:6] == ["yes", "yes", "yes", "natbr0"]
    assert rows["natlab-vm0"][2:4] == ["yes", "yes"]
    assert "leases: not reported by this driver" in status


def test_status_and_destroy_on_a_fresh_test_host():
    status = topoc("status", NAT, "--format", "json")
    assert status.returncode == 0, status.stderr
    objects = json.loads(status.stdout)["objects"]
    assert {o["name"]: o["defined"] for o in objects} == {
        "natlab-natnet": False, "natlab-vm0": False, "natlab-vm1": False}
    destroy = topoc("destroy", NAT)
    assert destroy.returncode == 0 and "nothing to destroy" in destroy.stdout


def test_a_clash_with_the_host_is_a_diagnostic_and_exit_1(tmp_path):
    # The test driver's `default` network holds 192.168.122.0/24.
    clash = tmp_path / "clash.topo"
    clash.write_text((EXAMPLES / "nat.topo").read_text().replace("188.64.100.", "192.168.122."))
    out = topoc("deploy", str(clash))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[host-subnet-clash]" in out.stderr and "libvirt network default" in out.stderr
    assert "nothing was changed" in out.stderr
    assert "Traceback" not in out.stderr
    plan = topoc("plan", str(clash), "--format", "json")
    assert plan.returncode == 1
    assert [d["code"] for d in json.loads(plan.stdout)["conflicts"]] == ["host-subnet-clash"]


def test_an_unreachable_daemon_is_exit_2_with_a_clear_message(tmp_path):
    uri = f"qemu:///system?socket={tmp_path}/no-such-sock"
    for command in ("plan", "deploy", "status", "destroy"):
        out = topoc(command, NAT, "--connect", uri)
        assert out.returncode == 2, (command, out.stderr)
        assert "is libvirtd running" in out.stderr and uri in out.stderr
        assert "Traceback" not in out.stderr


def test_errors_in_the_file_stop_deploy_before_libvirt(tmp_path):
    broken = tmp_path / "broken.topo"
    broken.write_text("lab x\nnetwork n on h {\n    mode nat\n}\n")
    out = topoc("deploy", str(broken), "--connect", f"qemu:///system?socket={tmp_path}/none")
    assert out.returncode == 1, out.stderr
    assert "error" in out.stderr and "is libvirtd running" not in out.stderr


def test_a_lab_with_several_hosts_asks_for_host(tmp_path):
    two = tmp_path / "two.topo"
    text = "".join(line for line in (EXAMPLES / "nat.topo").read_text().splitlines(keepends=True)
                   if not line.startswith("expect"))
    two.write_text(text
                   .replace("vm vm1 on kvm1", "vm vm1 on kvm2")
                   .replace("nic eth0 on natnet address 188.64.100.3 mac 52:54:00:6b:3c:58",
                            "nic eth0 on side address 10.9.9.3")
                   + "\nhost kvm2 {\n    nic eth0 on lan address 192.168.101.12\n}\n"
                   + "\nnetwork side on kvm2 {\n    mode isolated\n    bridge side0\n"
                     "    address 10.9.9.1/24\n}\n")
    out = topoc("plan", str(two))
    assert out.returncode == 2 and "--host" in out.stderr, out.stdout + out.stderr
    out = topoc("plan", str(two), "--host", "kvm2", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert {c["name"] for c in json.loads(out.stdout)["changes"]} == {"natlab-side", "natlab-vm1"}



def test_a_socket_the_user_may_not_open_is_permission_denied(tmp_path):
    """As an unprivileged user, a root-only daemon socket: the message says permission,
    not "is libvirtd running". (A forked child drops to nobody and connects for real.)"""
    import os
    import socket

    from conftest import require_root
    from topoc.deploy import engine as deploy
    require_root()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(private / "libvirt-sock"))
    listener.listen()
    uri = f"qemu:///system?socket={private}/libvirt-sock"
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                deploy.connect(uri)
                message = "connected?!"
            except deploy.DeployError as e:
                message = str(e)
            os.write(write, message.encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    listener.close()
    assert message.startswith(f"permission denied on {uri}"), message
    assert "libvirt group" in message


def test_destroy_needs_only_the_labs_name(tmp_path):
    """A file broken since the deploy (here: an address used twice) still names its lab,
    so destroy works; deploy refuses it."""
    broken = tmp_path / "broken.topo"
    broken.write_text((EXAMPLES / "nat.topo").read_text().replace("188.64.100.3 mac", "188.64.100.2 mac"))
    assert topoc("deploy", str(broken)).returncode == 1
    out = topoc("destroy", str(broken))
    assert out.returncode == 0, out.stderr
    assert "[address-conflict]" in out.stderr and "lab natlab owns nothing" in out.stdout
