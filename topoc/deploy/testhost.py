"""A test host that remembers: libvirt's test:///default, kept between topoc commands.

libvirt's test driver holds its host in memory, per process: `topoc deploy` and then
`topoc status` would each see a fresh default host. The driver also loads a whole host
from an XML file named in its URI (test:///path/to/host.xml, a <node> holding
<domain>, <network>, <interface> and <pool> elements: https://libvirt.org/drvtest.html).
So after each command topoc writes the host's objects to its state folder
(STATE/test-host/default.xml) and opens that file the next time someone asks for
test:///default; `topoc reset-test-host` deletes it and the next command starts from
libvirt's own default host again.

What the file cannot carry is put back by API calls right after opening (on the private
in-memory copy, so no real host is involved): the driver starts every network it loads
and knows no autostart flag in the file, so `default.json` beside it records each
object's active and autostart state; a domain's run state goes into the file itself as
<test:runstate> (the driver's own XML namespace for it).

Only topoc.deploy imports libvirt; this module gets it passed in.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_URI = "test:///default"
# The test driver's namespace for a domain's state in a host file, and its values
# (virDomainState): 1 running, 5 shut off.
TEST_NAMESPACE = "http://libvirt.org/schemas/domain/test/1.0"
RUNNING, SHUTOFF = 1, 5


class TestHostError(Exception):
    """The saved test host cannot be read or written (a message for people)."""


def host_file(state_dir: Path) -> Path:
    return state_dir / "test-host" / "default.xml"


def _states_file(state_dir: Path) -> Path:
    return state_dir / "test-host" / "default.json"


def open_default(lv: Any, state_dir: Path) -> Any:
    """A connection to test:///default as topoc's commands left it: the saved host when
    there is one, else libvirt's own default host."""
    path = host_file(state_dir)
    if not path.exists():
        return lv.open(DEFAULT_URI)
    try:
        states = json.loads(_states_file(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TestHostError(f"cannot read the saved test host beside {path} ({e}); "
                            "`topoc reset-test-host` starts over") from None
    try:
        conn = lv.open(f"test://{path}")
    except lv.libvirtError as e:
        raise TestHostError(f"cannot load the saved test host {path}: {e.get_error_message() or e}; "
                            "`topoc reset-test-host` starts over") from None
    for name, state in states.get("networks", {}).items():
        net = conn.networkLookupByName(name)
        if not state.get("active", True) and net.isActive():
            net.destroy()
        if state.get("autostart"):
            net.setAutostart(1)
    for name, state in states.get("domains", {}).items():
        if state.get("autostart"):
            conn.lookupByName(name).setAutostart(1)
    return conn


def save(lv: Any, conn: Any, state_dir: Path) -> Path:
    """Write the host's domains, networks, interfaces and storage pools (with their
    volumes) to the state folder, replacing the saved host atomically. Each object's XML
    goes in as libvirt wrote it (text, not re-serialised), so its <metadata> keeps its
    namespace where libvirt expects it."""
    parts = [f"<node xmlns:test='{TEST_NAMESPACE}'>"]
    states: dict[str, dict[str, dict[str, bool]]] = {"networks": {}, "domains": {}}
    for dom in sorted(conn.listAllDomains(0), key=lambda d: d.name()):
        xml = dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE).rstrip()
        runstate = RUNNING if dom.isActive() else SHUTOFF
        cut = xml.rindex("</domain>")
        parts.append(xml[:cut] + f"  <test:runstate>{runstate}</test:runstate>\n</domain>")
        states["domains"][dom.name()] = {"autostart": bool(dom.autostart())}
    for net in sorted(conn.listAllNetworks(0), key=lambda n: n.name()):
        parts.append(net.XMLDesc(0).rstrip())
        states["networks"][net.name()] = {"active": bool(net.isActive()), "autostart": bool(net.autostart())}
    for interface in sorted(conn.listAllInterfaces(0), key=lambda i: i.name()):
        parts.append(interface.XMLDesc(0).rstrip())
    for pool in sorted(conn.listAllStoragePools(0), key=lambda p: p.name()):
        xml = pool.XMLDesc(0).rstrip()
        volumes = "".join(v.XMLDesc(0) for v in sorted(pool.listAllVolumes(0), key=lambda v: v.name()))
        cut = xml.rindex("</pool>")
        parts.append(xml[:cut] + volumes + "</pool>")
    parts.append("</node>")
    path = host_file(state_dir)
    _write(path, "\n".join(parts) + "\n")
    _write(_states_file(state_dir), json.dumps(states, indent=2, sort_keys=True) + "\n")
    return path


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError as e:
        raise TestHostError(f"cannot save the test host to {path}: {e.strerror}") from None


def reset(state_dir: Path) -> bool:
    """Forget the saved test host (and the ownership records made on it); True when
    there was one."""
    import shutil
    from urllib.parse import quote

    there = host_file(state_dir).exists()
    for path in (host_file(state_dir), _states_file(state_dir)):
        path.unlink(missing_ok=True)
    records = state_dir / quote(DEFAULT_URI, safe="")
    if records.is_dir():
        shutil.rmtree(records)
        there = True
    return there
