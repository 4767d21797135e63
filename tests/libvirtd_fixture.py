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

import os
import shutil
import signal
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
# QEMU runs as root here so that it may open /dev/kvm (root-only on this machine);
# otherwise libvirt finds KVM unusable and re-probes QEMU on every call.
printf 'user = "root"\ngroup = "root"\n' >> "$T/etc/qemu.conf"
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt /run/lock
mount --bind "$T/run" /run/libvirt
mount --bind "$T/lib" /var/lib/libvirt
mount --bind "$T/etc" /etc/libvirt
mount --bind "$T/log" /var/log/libvirt
mount --bind "$T/cache" /var/cache/libvirt
# QEMU's capabilities as an earlier daemon of this machine probed them ($2, when there
# is one): libvirt keeps a cached probe while QEMU, libvirtd and the host are unchanged,
# so this daemon does not probe QEMU again (about a second per daemon).
if [ -n "${2:-}" ] && [ -d "$2" ]; then
    mkdir -p "$T/cache/qemu/capabilities"
    cp -a "$2/." "$T/cache/qemu/capabilities/"
fi
# A sysfs of this network namespace: libvirt reads and tunes bridges under
# /sys/class/net and lists host interfaces from it; the machine's would show eth0.
mount -t sysfs sysfs /sys
# /dev/kvm exists on these machines but hangs when QEMU uses it: this daemon gets a
# /dev without it (a copy of the device nodes, in its mount namespace only), so
# libvirt finds no KVM and offers QEMU/TCG, which deploy picks from the domain
# capabilities. A /dev/kvm it cannot use but can see (/dev/null bound over it) makes
# libvirt re-probe QEMU on every define instead.
if [ -e /dev/kvm ]; then
    mkdir -p "$T/dev"
    mount -t tmpfs -o mode=755 tmpfs "$T/dev"
    cp -a /dev/. "$T/dev/" 2>/dev/null || true
    rm -f "$T/dev/kvm"
    mount --rbind /dev/pts "$T/dev/pts"
    mount --rbind /dev/shm "$T/dev/shm" 2>/dev/null || true
    mount --rbind "$T/dev" /dev
    # libvirt would give each QEMU a private /dev by moving /dev's submounts, which a
    # /dev that is itself a bind mount does not allow: QEMU shares this one instead.
    printf 'namespaces = []\n' >> "$T/etc/qemu.conf"
fi
ip link set lo up
libvirtd --pid-file /run/libvirt/libvirtd.pid &
daemon=$!
trap 'kill -TERM "$daemon"' TERM INT
wait "$daemon"
"""

# Where the QEMU capabilities a daemon probed are kept for the next one (outside the
# checkout; per machine, like libvirt's own /var/cache/libvirt).
CAPABILITIES_CACHE = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                      / "topoc-tests" / "libvirt-qemu-capabilities")

STARTUP_TIMEOUT = 20.0
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


def _start(root: Path) -> tuple[subprocess.Popen, int]:
    script = root / "start.sh"
    script.write_text(START, encoding="utf-8")
    log = open(root / "libvirtd.log", "wb")
    process = subprocess.Popen(
        ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
         "--kill-child", "sh", str(script), str(root), str(CAPABILITIES_CACHE)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    return process, process.pid


def _wait_ready(process: subprocess.Popen, daemon: Libvirtd) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if daemon.socket.exists():
            return
        time.sleep(0.05)
    tail = (daemon.root / "libvirtd.log").read_text(errors="replace")[-3000:]
    pytest.fail(f"libvirtd did not come up in its namespace:\n{tail}")


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Libvirtd]:
    require_root()
    # qemu-system-x86_64: qemu:///system probes it before it defines any domain.
    for tool in ("libvirtd", "unshare", "nsenter", "dnsmasq", "ip", "qemu-system-x86_64"):
        require_tool(tool)
    pytest.importorskip("libvirt")
    # Short: the socket path must fit a sockaddr_un (108 bytes).
    root = tmp_path_factory.mktemp("lvd", numbered=True)
    process, unshare_pid = _start(root)
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
        _keep_capabilities(root / "cache" / "qemu" / "capabilities")


def _keep_capabilities(probed: Path) -> None:
    """Keep the first probe for later daemons: copied aside, then renamed into place in
    one step, so a daemon starting meanwhile sees all of it or nothing."""
    if CAPABILITIES_CACHE.exists() or not any(probed.glob("*.xml")):
        return
    CAPABILITIES_CACHE.parent.mkdir(parents=True, exist_ok=True)
    staging = CAPABILITIES_CACHE.with_name(f".{CAPABILITIES_CACHE.name}.{os.getpid()}")
    shutil.copytree(probed, staging)
    try:
        os.rename(staging, CAPABILITIES_CACHE)
    except OSError:  # another run kept its probe first: that one is as good
        shutil.rmtree(staging, ignore_errors=True)
