"""Two hypervisors reachable over ssh, for real: the two sandboxed libvirtds of
tests/libvirtd_fixture.py, each with an sshd (Debian's openssh-server) in its network
and mount namespaces, joined by a LAN bridge in a third namespace, the workstation,
from which the tests run ssh, virsh and topoc (`ip netns exec WS ...`).

The test makes the keys: one host key per sshd and one client key, written under the
test's temporary directory; known_hosts lists both host keys, and a small `ssh` wrapper
(libvirt's `command=` URI parameter, https://libvirt.org/uri.html) points ssh at it, so
nothing of the machine's own ~/.ssh is read or written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_tool
from libvirtd_fixture import Libvirtd, _require_tools, running_libvirtd

LAN_PREFIX = "10.77.0"
SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {root}/host_key
AuthorizedKeysFile {root}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile {root}/sshd.pid
"""


@dataclass
class SshHost:
    name: str
    daemon: Libvirtd
    address: str
    key: Path  # the client's private key
    ssh_command: Path  # ssh with the test's known_hosts, logging to ssh.log beside it

    def uri(self, *, extra: str = "") -> str:
        return (f"qemu+ssh://root@{self.address}/system?keyfile={self.key}"
                f"&command={self.ssh_command}&no_tty=1{extra}")


@dataclass
class Workstation:
    namespace: str

    def run(self, *argv: str, check: bool = False, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.namespace, *argv], capture_output=True,
                              text=True, timeout=timeout, check=check, env={**os.environ, **(env or {})})


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   capture_output=True, timeout=30)


def _in(daemon: Libvirtd, *argv: str) -> None:
    subprocess.run(["nsenter", "-t", str(daemon.init_pid), "-n", "-m", *argv], check=True,
                   capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def ssh_hosts(root: Path, daemons: list[Libvirtd]) -> Iterator[tuple[Workstation, list[SshHost]]]:
    """sshd in each daemon's namespaces, a LAN bridge in a workstation namespace."""
    ws = f"topocws{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ws], check=True, timeout=10)
    sshds: list[subprocess.Popen] = []
    try:
        _keygen(root / "client")
        subprocess.run(["ip", "-n", ws, "link", "add", "lan", "type", "bridge"], check=True)
        subprocess.run(["ip", "-n", ws, "link", "set", "lan", "up"], check=True)
        subprocess.run(["ip", "-n", ws, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ws, "addr", "add", f"{LAN_PREFIX}.1/24", "dev", "lan"], check=True)
        known = []
        hosts = []
        for i, daemon in enumerate(daemons, start=1):
            name = f"kvm{i}"
            address = f"{LAN_PREFIX}.{10 + i}"
            here = root / name
            here.mkdir()
            _keygen(here / "host_key")
            shutil.copy(root / "client.pub", here / "authorized_keys")
            (here / "sshd_config").write_text(SSHD_CONFIG.format(address=address, root=here))
            port = f"p{i}{secrets.token_hex(2)}"
            subprocess.run(["ip", "-n", ws, "link", "add", port, "type", "veth", "peer", "name",
                            "eth0", "netns", f"/proc/{daemon.init_pid}/ns/net"], check=True)
            subprocess.run(["ip", "-n", ws, "link", "set", port, "master", "lan", "up"], check=True)
            _in(daemon, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            _in(daemon, "ip", "link", "set", "eth0", "up")
            _in(daemon, "mkdir", "-p", "/run/sshd")
            sshds.append(subprocess.Popen(
                ["nsenter", "-t", str(daemon.init_pid), "-n", "-m", "/usr/sbin/sshd", "-D", "-e",
                 "-f", str(here / "sshd_config")],
                stdout=open(here / "sshd.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True))
            key = (here / "host_key.pub").read_text().split()
            known.append(f"{address} {key[0]} {key[1]}\n")
            hosts.append(SshHost(name, daemon, address, root / "client", root / "ssh"))
        (root / "known_hosts").write_text("".join(known))
        (root / "ssh").write_text(
            "#!/bin/sh\n# ssh with the test's own known_hosts (libvirt's command= parameter);\n"
            "# each command line is logged, so the tests see what libvirt runs remotely\n"
            f"printf '%s\\n' \"$*\" >> {root}/ssh.log\n"
            f"exec ssh -o UserKnownHostsFile={root}/known_hosts -o StrictHostKeyChecking=yes "
            "-o ConnectTimeout=5 \"$@\"\n")
        (root / "ssh").chmod(0o755)
        workstation = Workstation(ws)
        for host in hosts:
            _wait_for_sshd(workstation, host, root)
        yield workstation, hosts
    finally:
        for process in sshds:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ws], check=False, timeout=10)


def _wait_for_sshd(ws: Workstation, host: SshHost, root: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        out = ws.run(str(root / "ssh"), "-i", str(host.key), "-o", "BatchMode=yes",
                     f"root@{host.address}", "true", timeout=20)
        if out.returncode == 0:
            return
        time.sleep(0.2)
    log = (root / host.name / "sshd.log").read_text(errors="replace")[-2000:]
    pytest.fail(f"sshd of {host.name} did not answer: {out.stderr}\n{log}")


@pytest.fixture(scope="module")
def ssh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workstation, list[SshHost]]]:
    _require_tools()
    for tool in ("ssh", "ssh-keygen", "/usr/sbin/sshd"):
        require_tool(tool)
    with contextlib.ExitStack() as stack:
        one = stack.enter_context(running_libvirtd(tmp_path_factory.mktemp("lvd", numbered=True)))
        two = stack.enter_context(running_libvirtd(tmp_path_factory.mktemp("lvd", numbered=True)))
        yield stack.enter_context(ssh_hosts(tmp_path_factory.mktemp("ssh", numbered=True), [one, two]))
