"""A real libvirtd for the tests, in its own network, mount and PID namespaces.

The daemon sees temporary directories bind-mounted over /run/libvirt, /var/lib/libvirt,
/etc/libvirt (a copy of the machine's configuration), /var/log/libvirt and
/var/cache/libvirt, a private tmpfs on /run and the namespace's own /sys, so everything it creates (bridges,
iptables rules, dnsmasq, sockets, state) lives and dies inside the namespaces: the
machine's own network and libvirt are never touched. The tests connect through the
socket: qemu:///system?socket=<dir>/run/libvirt-sock.

Stopping the namespace's PID 1 ends every process in it (libvirtd, dnsmasq), which
takes the network namespace, its bridges and its mounts with it; the fixture does that
in a finally block, so also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import require_root, require_tool

# PID 1 of the namespace is this shell, not libvirtd: QEMU's capability probes
# daemonize, their orphans land on PID 1, and a PID 1 that never reaps them leaves
# zombies libvirt waits on for tens of seconds. `wait` in sh reaps any child.
START = r"""
set -eu
T="$1"
mkdir -p "$T/run" "$T/lib" "$T/etc" "$T/log" "$T/cache"
cp -a /etc/libvirt/. "$T/etc/"
# QEMU runs as root here, so that it may read the tests' kernels and seeds wherever
# they are, without libvirt's DAC relabelling.
printf 'user = "root"\ngroup = "root"\n' >> "$T/etc/qemu.conf"
if [ "$3" = tcg ]; then
    # A daemon that boots guests (the default one only defines them):
    # QEMU writes its own log and console files, as no virtlogd runs in the namespace;
    # no cgroup controllers, the namespace's cgroup tree is not libvirt's to carve up;
    # no private /dev per guest, which libvirt would fail to carry the /dev/kvm mount
    # below into ("Unable to move ... mount to /dev/kvm").
    printf 'stdio_handler = "file"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n' \
        >> "$T/etc/qemu.conf"
fi
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt /run/lock
mount --bind "$T/run" /run/libvirt
mount --bind "$T/lib" /var/lib/libvirt
mount --bind "$T/etc" /etc/libvirt
mount --bind "$T/log" /var/log/libvirt
mount --bind "$T/cache" /var/cache/libvirt
# QEMU's capabilities, probed once and kept across daemons and runs in a folder of
# the machine's ($2): a daemon with an empty cache spends seconds probing QEMU first.
# libvirt re-probes by itself when QEMU, libvirtd or the kernel change.
mkdir -p "$2" /var/cache/libvirt/qemu
mount --bind "$2" /var/cache/libvirt/qemu
# /dev/kvm exists on the test machines but hangs. For `tcg` ($3) it is hidden (in
# this mount namespace only) behind a read-only empty file: libvirt then boots guests
# with QEMU/TCG (domain type='qemu') instead of spending ~48 s probing KVM on every define. Read-only, not
# /dev/null: libvirt re-probes QEMU whenever /dev/kvm looks writable to it but its
# cached capabilities say no KVM, so a writable stand-in would defeat the cache.
if [ "$3" = tcg ] && [ -e /dev/kvm ]; then
    : > "$T/no-kvm"
    mount --bind "$T/no-kvm" /dev/kvm
    mount -o remount,bind,ro /dev/kvm
fi
# A sysfs of this network namespace: libvirt reads and tunes bridges under
# /sys/class/net and lists host interfaces from it; the machine's would show eth0.
mount -t sysfs sysfs /sys
ip link set lo up
libvirtd --pid-file /run/libvirt/libvirtd.pid &
daemon=$!
trap 'kill -TERM "$daemon"' TERM INT
wait "$daemon"
"""

STARTUP_TIMEOUT = 20.0
# Outside the checkout and the test's temporary folders, so that it outlives them; one
# per KVM setting, since the capabilities differ with it.
QEMU_CAPABILITIES_CACHE = Path("/var/cache/topoc-test-libvirt")
STOP_TIMEOUT = 10.0


@dataclass
class Libvirtd:
    root: Path
    init_pid: int  # PID 1 of the namespaces, as the machine sees it

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    def run(self, *command: str) -> str:
        """A command in the daemon's network and mount namespaces (`ip link`...)."""
        out = subprocess.run(["nsenter", "-t", str(self.init_pid), "-n", "-m", *command],
                             capture_output=True, text=True, check=True, timeout=10)
        return out.stdout

    def net_namespace(self) -> str:
        return os.readlink(f"/proc/{self.init_pid}/ns/net")

    def processes(self, name: str) -> dict[int, str]:
        """PID -> command line of the processes called `name` inside the namespace."""
        mine = self.net_namespace()
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns/net") != mine:
                    continue
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0].decode()) == name:
                found[int(entry.name)] = " ".join(a.decode() for a in argv if a)
        return found


def _child_of(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _stop(process: subprocess.Popen, init_pid: int | None) -> None:
    if process.poll() is None and init_pid is not None:
        with _ignore_missing():
            os.kill(init_pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        # --kill-child makes unshare take the namespace's PID 1 (and so all) with it.
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


class _ignore_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:  # type: ignore[no-untyped-def]
        return kind is ProcessLookupError


def _start(root: Path, hide_kvm: bool = False) -> tuple[subprocess.Popen, int]:
    script = root / "start.sh"
    script.write_text(START, encoding="utf-8")
    log = open(root / "libvirtd.log", "wb")
    process = subprocess.Popen(
        ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
         "--kill-child", "sh", str(script), str(root),
         str(QEMU_CAPABILITIES_CACHE / ("qemu-tcg" if hide_kvm else "qemu")),
         "tcg" if hide_kvm else "default"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    return process, process.pid


def _accepts(path: Path) -> bool:
    """Whether the daemon accepts connections on its socket: the file appears a moment
    before libvirtd listens on it (a client then gets "Connection refused")."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _wait_ready(process: subprocess.Popen, daemon: Libvirtd) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if daemon.socket.exists() and _accepts(daemon.socket):
            return
        time.sleep(0.05)
    tail = (daemon.root / "libvirtd.log").read_text(errors="replace")[-3000:]
    pytest.fail(f"libvirtd did not come up in its namespace:\n{tail}")


def _require_tools() -> None:
    require_root()
    # qemu-system-x86_64: qemu:///system probes it before it defines any domain.
    for tool in ("libvirtd", "unshare", "nsenter", "dnsmasq", "ip", "qemu-system-x86_64"):
        require_tool(tool)
    pytest.importorskip("libvirt")


@contextlib.contextmanager
def running_libvirtd(root: Path, hide_kvm: bool = False) -> Iterator[Libvirtd]:
    """A libvirtd in namespaces of its own under `root` (short: the socket path must fit
    a sockaddr_un, 108 bytes), stopped with everything it made when the block ends."""
    process, unshare_pid = _start(root, hide_kvm)
    init_pid = None
    try:
        for _ in range(100):
            init_pid = _child_of(unshare_pid)
            if init_pid is not None or process.poll() is not None:
                break
            time.sleep(0.02)
        assert init_pid is not None, "unshare did not start the namespace"
        daemon = Libvirtd(root, init_pid)
        _wait_ready(process, daemon)
        yield daemon
    finally:
        _stop(process, init_pid)


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    _require_tools()
    with running_libvirtd(tmp_path_factory.mktemp("lvd", numbered=True)) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def two_libvirtds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Libvirtd, Libvirtd]]:
    """Two daemons, each in its own network and mount namespace: two hypervisors."""
    _require_tools()
    with running_libvirtd(tmp_path_factory.mktemp("lvd", numbered=True)) as one, \
            running_libvirtd(tmp_path_factory.mktemp("lvd", numbered=True)) as two:
        yield one, two


@pytest.fixture(scope="module")
def libvirtd_tcg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    """A daemon that boots guests: /dev/kvm hidden, so QEMU/TCG (domain type='qemu').
    (The `libvirtd` one keeps the machine's /dev/kvm until topoc takes the domain type
    from the connection; its tests define type='kvm' domains.)"""
    _require_tools()
    with running_libvirtd(tmp_path_factory.mktemp("lvt", numbered=True), hide_kvm=True) as daemon:
        yield daemon
