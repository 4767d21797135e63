"""Helpers for the deploy tests: labs written on the fly, snapshots of a whole libvirt
connection, and a connection wrapper that counts (and can fail) every mutating call.

The wrapper is not a mock: every call goes to the real libvirt driver, except the one
chosen to fail, which raises a real libvirtError before reaching it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from topoc.compiler import compile_file
from topoc.model.ir import Lab

# Every libvirt call that changes the host, on connections, networks and domains.
MUTATING = frozenset({
    "networkDefineXML", "networkCreateXML", "defineXML", "defineXMLFlags", "createXML",
    "create", "createWithFlags", "destroy", "destroyFlags", "undefine", "undefineFlags",
    "setAutostart", "update", "setMetadata",
})


# libvirt's test:///default as a file: the same `default` network, `test` domain and
# `eth1` host interface. Every open of test:///default in one process shares one host
# for as long as any connection or object of it lives, so tests that must not see each
# other's objects each open a copy of it instead: a file URI is a private host per open.
DEFAULT_HOST_XML = """\
<node>
  <domain type='test'>
    <name>test</name>
    <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
    <memory>8388608</memory>
    <currentMemory>2097152</currentMemory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><source file='/guest/diskimage1'/><target dev='vda' bus='virtio'/></disk>
      <interface type='network'><mac address='aa:bb:cc:dd:ee:ff'/><source network='default'/></interface>
    </devices>
  </domain>
  <network>
    <name>default</name>
    <uuid>dd8fe884-6c02-601e-7551-cca97df1c5df</uuid>
    <forward mode='nat'/>
    <bridge name='virbr0'/>
    <ip address='192.168.122.1' netmask='255.255.255.0'>
      <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
    </ip>
  </network>
  <interface type='ethernet' name='eth1'>
    <start mode='onboot'/>
    <mac address='aa:bb:cc:dd:ee:ff'/>
    <mtu size='1492'/>
    <protocol family='ipv4'><ip address='192.168.0.5' prefix='24'/><route gateway='192.168.0.1'/></protocol>
  </interface>
</node>
"""


def private_test_host(directory: Path, bridges: dict[str, str] | None = None) -> str:
    """The URI of a fresh private copy of the test driver's default host; `bridges`
    (bridge -> the nic that is its port) adds host bridges, as a host has them for a
    bridged network (https://libvirt.org/formatinterface.html#bridge-interfaces)."""
    path = directory / "test-host.xml"
    extra = "".join(
        f"  <interface type='bridge' name='{bridge}'><start mode='onboot'/>"
        f"<bridge><interface type='ethernet' name='{nic}'/></bridge></interface>\n"
        for bridge, nic in (bridges or {}).items())
    path.write_text(DEFAULT_HOST_XML.replace("</node>", extra + "</node>"), encoding="utf-8")
    return f"test://{path}"


def compile_lab(tmp_path: Path, text: str, name: str = "lab.topo") -> Lab:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = compile_file(str(path))
    assert result.ok, [f"{d.code}: {d.message}" for d in result.diagnostics]
    assert result.lab is not None
    return result.lab


def snapshot(conn: Any) -> dict:
    """Everything a deploy could change: each network's and domain's full XML, whether
    it runs, whether it autostarts. A domain's `id` is left out: it is a counter libvirt
    bumps on every start, so a domain stopped and started again has a new one."""
    networks = {n.name(): (n.XMLDesc(0), bool(n.isActive()), bool(n.autostart()))
                for n in conn.listAllNetworks(0)}
    domains = {d.name(): (re.sub(r"^(<domain type='\w+') id='\d+'", r"\1", d.XMLDesc(0)),
                          bool(d.isActive()), bool(d.autostart()))
               for d in conn.listAllDomains(0)}
    return {"networks": networks, "domains": domains}


class Calls:
    """The mutating calls made through a CountingConnection; fails the `fail_at`-th."""

    def __init__(self, fail_at: int = 0) -> None:
        self.fail_at = fail_at
        self.log: list[tuple[str, str]] = []  # (object name, method)

    def record(self, owner: str, method: str) -> None:
        self.log.append((owner, method))
        if len(self.log) == self.fail_at:
            import libvirt as lv

            lv.virResetLastError()  # so the error carries our message, not a stale one
            raise lv.libvirtError(f"injected failure at mutating call {self.fail_at}: {owner}.{method}")


class Counting:
    """A libvirt connection, network or domain whose mutating calls go through Calls."""

    def __init__(self, real: Any, calls: Calls) -> None:
        self._real = real
        self._calls = calls

    def _wrap(self, value: Any) -> Any:
        import libvirt as lv

        if isinstance(value, (lv.virNetwork, lv.virDomain)):
            return Counting(value, self._calls)
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        return value

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in MUTATING:
                owner = self._real.name() if hasattr(self._real, "UUIDString") else "conn"
                self._calls.record(owner, name)
            return self._wrap(attribute(*args, **kwargs))

        return call
