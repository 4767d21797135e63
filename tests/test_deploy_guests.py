"""Deploy of guests on a real libvirtd (tests/libvirtd_fixture.py): the storage pool, each
VM's qcow2 overlay of its base image and its NoCloud seed ISO, the domain type the
connection offers, and the lab's nft table loaded in the daemon's network namespace;
destroy leaves no volume, pool or table behind and the base image untouched."""

from __future__ import annotations

import hashlib
import time
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")
pytest.importorskip("pycdlib")

from conftest import require_tool  # noqa: E402
from deploy_helpers import compile_lab  # noqa: E402
from libvirtd_fixture import Libvirtd, libvirtd_tcg  # noqa: E402,F401
from topoc.backends import cloudinit  # noqa: E402
from topoc.backends.host import table_name  # noqa: E402
from topoc.deploy import engine as deploy  # noqa: E402
from topoc.deploy import guests  # noqa: E402
from topoc.deploy.seed import read_iso  # noqa: E402

RUN = uuid.uuid4().hex[:5]
LAB = f"g{RUN}"
POOL = f"{LAB}-images"


def lab_text(base: Path, kernel: Path, address: str = "10.62.1.10") -> str:
    return f"""\
lab {LAB}

host kvm1 {{
}}

network nat on kvm1 {{
    mode nat
    bridge gn{RUN}
    address 10.62.1.1/24
    dns on
}}

vm web on kvm1 {{
    memory 128MiB
    image {base}
    user alice
    nic eth0 on nat address {address}
}}

vm tiny on kvm1 {{
    memory 128MiB
    kernel {kernel}
    cmdline "console=ttyS0"
    nic eth0 on nat address 10.62.1.11
}}

forward tcp 2222 to web:22
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny qcow2 base image and a stand-in kernel (the VMs are defined, not started)."""
    base = tmp_path / "base.qcow2"
    subprocess.run([require_tool("qemu-img"), "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"not a kernel: the VM is never started here")
    return base, kernel


@pytest.fixture
def libvirtd(libvirtd_tcg: Libvirtd) -> Libvirtd:
    """The daemon that boots guests here: no KVM (the fixture hides /dev/kvm), QEMU/TCG."""
    return libvirtd_tcg


@pytest.fixture
def target(libvirtd: Libvirtd, tmp_path: Path):
    """A connection whose host commands (nft) run in the daemon's network namespace."""
    require_tool("nft")
    opened = deploy.connect(libvirtd.uri, state_dir=tmp_path / "state")
    opened.host_prefix = ("nsenter", "-t", str(libvirtd.init_pid), "-n", "-m")
    try:
        yield opened
    finally:
        _clean(opened, libvirtd)
        opened.conn.close()


def _clean(target: deploy.Target, libvirtd: Libvirtd) -> None:
    conn = target.conn
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(f"{LAB}-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for net in conn.listAllNetworks(0):
        if net.name().startswith(f"{LAB}-"):
            if net.isActive():
                net.destroy()
            net.undefine()
    for pool in conn.listAllStoragePools(0):
        if pool.name().startswith(LAB):
            if pool.isActive():
                pool.refresh(0)
                for vol in pool.listAllVolumes(0):
                    vol.delete(0)
                pool.destroy()
            pool.undefine()
    for family in ("inet", "ip6"):
        subprocess.run([*target.host_prefix, "nft", "delete", "table", family, f"topoc_{LAB}"],
                       capture_output=True)


def _volumes(conn) -> dict[str, object]:
    try:
        pool = conn.storagePoolLookupByName(POOL)
    except libvirt.libvirtError:
        return {}
    pool.refresh(0)
    return {v.name(): v for v in pool.listAllVolumes(0)}


def _table(libvirtd: Libvirtd, lab, family: str = "inet") -> str | None:
    run = subprocess.run(["nsenter", "-t", str(libvirtd.init_pid), "-n", "nft", "list", "table", family,
                          table_name(lab)], capture_output=True, text=True)
    return run.stdout if run.returncode == 0 else None


def test_deploy_makes_overlays_seeds_and_the_table_and_destroy_removes_them(libvirtd, target, files, tmp_path):
    base, kernel = files
    base_hash, base_mtime = sha256(base), base.stat().st_mtime_ns
    lab = compile_lab(tmp_path, lab_text(base, kernel))
    web, tiny = lab.node("web"), lab.node("tiny")

    plan = deploy.make_plan(lab, target)
    listed = {(c.action, c.kind, c.name) for c in plan.changes}
    seeds = {cloudinit.seed_volume(lab, vm) for vm in (web, tiny)}
    assert {("create", "pool", POOL), ("create", "volume", f"{POOL}/{LAB}-web.qcow2"),
            ("create", "table", f"inet topoc_{LAB}")} <= listed
    assert {("create", "volume", f"{POOL}/{s}") for s in seeds} <= listed
    assert plan.conflicts == []

    deploy.apply(lab, target)
    # The domain type the connection offers: this daemon has no KVM (the fixture hides
    # /dev/kvm), so QEMU's TCG; the domain boots its overlay, with the seed as a CD-ROM.
    dom = ET.fromstring(target.conn.lookupByName(f"{LAB}-web").XMLDesc(0))
    assert dom.get("type") == "qemu"
    sources = {d.get("device"): d.find("source").attrib for d in dom.findall("devices/disk")}
    assert sources["disk"] == {"pool": POOL, "volume": f"{LAB}-web.qcow2"}
    assert sources["cdrom"] == {"pool": POOL, "volume": cloudinit.seed_volume(lab, web)}
    tiny_dom = ET.fromstring(target.conn.lookupByName(f"{LAB}-tiny").XMLDesc(0))
    assert tiny_dom.findtext("os/kernel") == str(kernel) and tiny_dom.findtext("os/cmdline") == "console=ttyS0"

    volumes = _volumes(target.conn)
    assert set(volumes) == {f"{LAB}-web.qcow2", *seeds}, "no overlay for a VM without an image"
    overlay = ET.fromstring(volumes[f"{LAB}-web.qcow2"].XMLDesc(0))
    assert overlay.find("target/format").get("type") == "qcow2"
    assert overlay.findtext("backingStore/path") == str(base)
    assert overlay.find("backingStore/format").get("type") == "qcow2"
    overlay_file = libvirtd.root / "lib" / "images" / POOL / f"{LAB}-web.qcow2"
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay_file)],
                          capture_output=True, text=True, check=True).stdout
    assert f'"backing-filename": "{base}"' in info and '"virtual-size": 67108864' in info

    for vm in (web, tiny):
        iso = (libvirtd.root / "lib" / "images" / POOL / cloudinit.seed_volume(lab, vm)).read_bytes()
        label, contents = read_iso(iso)
        assert label == "cidata"
        assert contents == cloudinit.seed(lab, vm)
    assert "10.62.1.10/24" in cloudinit.seed(lab, web)["network-config"]

    table = _table(libvirtd, lab)
    assert table is not None and "dnat ip to 10.62.1.10:22" in table

    # Again: nothing to do.
    assert deploy.make_plan(lab, target).changes == []
    rows = {(r.kind, r.name): r for r in deploy.status(lab, target)}
    assert rows[("pool", POOL)].active and rows[("table", f"inet topoc_{LAB}")].defined
    assert all(rows[("volume", f"{POOL}/{s}")].defined for s in seeds)

    # A new address: a new seed (and so a changed domain); the old seed goes.
    moved = compile_lab(tmp_path, lab_text(base, kernel, "10.62.1.20"), "moved.topo")
    old_seed, new_seed = cloudinit.seed_volume(lab, web), cloudinit.seed_volume(moved, moved.node("web"))
    changes = {(c.action, c.kind, c.name) for c in deploy.make_plan(moved, target).changes}
    rule = (f"FORWARD -o gn{RUN} -d 10.62.1.{{}} -p tcp --dport 22 -m conntrack --ctstate DNAT -j ACCEPT")
    assert changes == {("create", "volume", f"{POOL}/{new_seed}"), ("update", "domain", f"{LAB}-web"),
                       ("remove", "volume", f"{POOL}/{old_seed}"), ("update", "table", f"inet topoc_{LAB}"),
                       ("create", "iptables-rule", rule.format(20)), ("remove", "iptables-rule", rule.format(10))}
    deploy.apply(moved, target)
    assert new_seed in _volumes(target.conn) and old_seed not in _volumes(target.conn)
    assert "dnat ip to 10.62.1.20:22" in (_table(libvirtd, moved) or "")

    removed, left_alone = deploy.destroy(LAB, target)
    assert left_alone == []
    assert {c.kind for c in removed} == {"domain", "network", "volume", "pool", "table", "iptables-rule"}
    assert _volumes(target.conn) == {}
    assert POOL not in {p.name() for p in target.conn.listAllStoragePools(0)}
    assert not (libvirtd.root / "lib" / "images" / POOL).exists()
    assert _table(libvirtd, lab) is None
    assert sha256(base) == base_hash and base.stat().st_mtime_ns == base_mtime, "the base image is untouched"
    assert deploy.destroy(LAB, target) == ([], [])


def test_a_missing_image_is_refused_before_anything_changes(target, files, tmp_path):
    base, kernel = files
    text = lab_text(tmp_path / "nowhere.qcow2", kernel)
    lab = compile_lab(tmp_path, text)
    with pytest.raises(deploy.Refused) as refused:
        deploy.apply(lab, target)
    [diagnostic] = refused.value.diagnostics
    assert diagnostic.code == "image-missing" and "nowhere.qcow2" in diagnostic.message
    assert diagnostic.span.line == text.splitlines().index(f"    image {tmp_path / 'nowhere.qcow2'}") + 1
    assert POOL not in {p.name() for p in target.conn.listAllStoragePools(0)}


def test_a_failing_step_rolls_back_pool_volumes_and_table(libvirtd, target, files, tmp_path, monkeypatch):
    base, kernel = files
    lab = compile_lab(tmp_path, lab_text(base, kernel))
    real = deploy.domain_xml

    def broken_define(*args, **kwargs):  # the last step of the plan fails for real
        return real(*args, **kwargs).replace("<vcpu>1</vcpu>", "<vcpu>0</vcpu>")

    monkeypatch.setattr(deploy, "domain_xml", broken_define)
    with pytest.raises(deploy.DeployError, match=r"(?s)^define domain .*the host is as it was before"):
        deploy.apply(lab, target)
    assert POOL not in {p.name() for p in target.conn.listAllStoragePools(0)}
    assert not (libvirtd.root / "lib" / "images" / POOL).exists()
    assert _table(libvirtd, lab) is None
    assert target.records.load(LAB).empty


def test_an_image_on_this_machine_is_uploaded_to_a_remote_host(libvirtd, target, files, tmp_path, monkeypatch):
    """The stream upload path, as for a remote URI: the base image becomes a volume of
    its own (a copy), the overlay is backed by that copy, and destroy removes both."""
    base, kernel = files
    text = lab_text(base, kernel).replace("forward tcp 2222 to web:22\n", "")
    lab = compile_lab(tmp_path, text)
    monkeypatch.setattr(guests, "is_local", lambda uri: False)
    deploy.apply(lab, target)
    volumes = _volumes(target.conn)
    [copy] = [name for name in volumes if "-base-" in name]
    assert (libvirtd.root / "lib" / "images" / POOL / copy).read_bytes() == base.read_bytes()
    overlay = ET.fromstring(volumes[f"{LAB}-web.qcow2"].XMLDesc(0))
    assert overlay.findtext("backingStore/path") == f"/var/lib/libvirt/images/{POOL}/{copy}"
    deploy.destroy(LAB, target)
    assert _volumes(target.conn) == {}


def test_a_deployed_forward_reaches_the_guest_through_libvirts_firewall(libvirtd, target, files, tmp_path):
    """Real traffic: a namespace standing in for VM web on the lab's bridge listens on
    port 22, a client on another link of the daemon's namespace connects to the host's
    port 2222. libvirt's own LIBVIRT_FWI rejects a new connection into a nat network,
    so this passes only with the FORWARD accept deploy inserts next to its nft table."""
    for tool in ("ip", "nc", "iptables"):
        require_tool(tool)
    base, kernel = files
    lab = compile_lab(tmp_path, lab_text(base, kernel))
    deploy.apply(lab, target)
    rules = subprocess.run(["nsenter", "-t", str(libvirtd.init_pid), "-n", "iptables", "-S", "FORWARD"],
                           capture_output=True, text=True, check=True).stdout
    assert f"topoc {LAB}: forward tcp 2222 to web:22" in rules.splitlines()[1], "first in FORWARD"
    host = ["nsenter", "-t", str(libvirtd.init_pid), "-n"]
    guest, client = f"tg{RUN}", f"tc{RUN}"

    def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)

    try:
        run("ip", "netns", "add", guest)
        run("ip", "netns", "add", client)
        run(*host, "ip", "link", "add", f"vg{RUN}", "type", "veth", "peer", "name", "eth0")
        run(*host, "ip", "link", "set", f"vg{RUN}", "master", f"gn{RUN}", "up")
        run(*host, "ip", "link", "set", "eth0", "netns", guest)
        run("ip", "-n", guest, "addr", "add", "10.62.1.10/24", "dev", "eth0")
        run("ip", "-n", guest, "link", "set", "eth0", "up")
        run("ip", "-n", guest, "route", "add", "default", "via", "10.62.1.1")
        run(*host, "ip", "link", "add", f"vc{RUN}", "type", "veth", "peer", "name", "eth0")
        run(*host, "ip", "addr", "add", "192.0.2.1/24", "dev", f"vc{RUN}")
        run(*host, "ip", "link", "set", f"vc{RUN}", "up")
        run(*host, "ip", "link", "set", "eth0", "netns", client)
        run("ip", "-n", client, "addr", "add", "192.0.2.2/24", "dev", "eth0")
        run("ip", "-n", client, "link", "set", "eth0", "up")
        listener = subprocess.Popen(["ip", "netns", "exec", guest, "timeout", "20", "nc", "-l", "-p", "22"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            connected = False
            for _ in range(20):  # the bridge port forwards at once (delay 0); the listener may lag
                if run("ip", "netns", "exec", client, "nc", "-z", "-w", "2", "192.0.2.1", "2222",
                       check=False).returncode == 0:
                    connected = True
                    break
                time.sleep(0.25)
            assert connected, "the forward did not reach the guest's port 22"
        finally:
            listener.kill()
            listener.wait()
    finally:
        for ns in (guest, client):
            run("ip", "netns", "del", ns, check=False)
    deploy.destroy(LAB, target)
    rules = subprocess.run(["nsenter", "-t", str(libvirtd.init_pid), "-n", "iptables", "-S", "FORWARD"],
                           capture_output=True, text=True, check=True).stdout
    assert f"topoc {LAB}" not in rules


def dual_stack_text(kernel: Path, ipv6: bool = True, nat6: bool = False) -> str:
    """A nat network with an IPv6 address (routed IPv6, libvirt's default, or NATed with
    `nat6`) and a forward: deploy loads the inet table for the forward, and the ip6
    table beside it."""
    six = "    address fd00:62:1::1/64\n" if ipv6 else ""
    six += "    nat6 on\n" if nat6 else ""
    vm_six = " address fd00:62:1::10" if ipv6 else ""
    return f"""\
lab {LAB}

host kvm1 {{
}}

network nat on kvm1 {{
    mode nat
    bridge gn{RUN}
    address 10.62.1.1/24
{six}}}

vm tiny on kvm1 {{
    memory 128MiB
    kernel {kernel}
    nic eth0 on nat address 10.62.1.10{vm_six}
}}

forward tcp 2222 to tiny:22
"""


def _forward_rules(libvirtd: Libvirtd, command: str) -> str:
    return subprocess.run(["nsenter", "-t", str(libvirtd.init_pid), "-n", command, "-w", "-S", "FORWARD"],
                          capture_output=True, text=True, check=True).stdout


RULE6 = (f"ip6tables FORWARD -o gn{RUN} -d fd00:62:1::10 -p tcp --dport 22 -m conntrack --ctstate DNAT "
         "-j ACCEPT")


def test_the_ip6_table_follows_the_inet_one(libvirtd, target, files, tmp_path):
    """A dual-stack lab: plan shows both tables and the forward's accept in both
    iptables and ip6tables, deploy makes them, a second plan has nothing to do, status
    lists them, a lab without IPv6 any more removes the IPv6 ones, destroy the rest."""
    _, kernel = files
    lab = compile_lab(tmp_path, dual_stack_text(kernel))
    tables = {("create", "table", f"{family} topoc_{LAB}") for family in ("inet", "ip6")}
    planned = {(c.action, c.kind, c.name) for c in deploy.make_plan(lab, target).changes}
    assert tables | {("create", "iptables-rule", RULE6)} <= planned

    deploy.apply(lab, target)
    inet, ip6 = _table(libvirtd, lab), _table(libvirtd, lab, "ip6")
    assert inet is not None and "dnat ip to 10.62.1.10:22" in inet
    assert ip6 is not None and f'oifname "gn{RUN}" reject' in ip6
    assert 'ip6 daddr fd00:62:1::/64 oifname "gn' in ip6, "a nat network's IPv6 is routed"
    assert "dnat to [fd00:62:1::10]:22" in ip6
    accept = f"-d fd00:62:1::10/128 -o gn{RUN} -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT"
    assert accept in _forward_rules(libvirtd, "ip6tables")
    assert deploy.make_plan(lab, target).changes == []
    rows = {(r.kind, r.name): r for r in deploy.status(lab, target)}
    assert rows[("table", f"ip6 topoc_{LAB}")].defined and rows[("table", f"inet topoc_{LAB}")].defined
    assert rows[("iptables-rule", RULE6)].defined

    four = compile_lab(tmp_path, dual_stack_text(kernel, ipv6=False), "four.topo")
    changes = {(c.action, c.kind, c.name) for c in deploy.make_plan(four, target).changes}
    assert {("remove", "table", f"ip6 topoc_{LAB}"), ("update", "table", f"inet topoc_{LAB}"),
            ("remove", "iptables-rule", RULE6)} <= changes
    deploy.apply(four, target)
    assert _table(libvirtd, lab, "ip6") is None and _table(libvirtd, lab) is not None
    assert accept not in _forward_rules(libvirtd, "ip6tables")

    deploy.apply(lab, target)
    assert _table(libvirtd, lab, "ip6") is not None
    removed, left_alone = deploy.destroy(LAB, target)
    assert left_alone == []
    assert {c.name for c in removed if c.kind == "table"} == {f"inet topoc_{LAB}", f"ip6 topoc_{LAB}"}
    assert RULE6 in {c.name for c in removed}
    assert _table(libvirtd, lab) is None and _table(libvirtd, lab, "ip6") is None
    assert accept not in _forward_rules(libvirtd, "ip6tables")


def test_a_failing_step_rolls_back_the_ip6_table_too(libvirtd, target, files, tmp_path, monkeypatch):
    _, kernel = files
    lab = compile_lab(tmp_path, dual_stack_text(kernel))
    real = deploy.domain_xml

    def broken_define(*args, **kwargs):  # the last step of the plan fails for real
        return real(*args, **kwargs).replace("<vcpu>1</vcpu>", "<vcpu>0</vcpu>")

    monkeypatch.setattr(deploy, "domain_xml", broken_define)
    with pytest.raises(deploy.DeployError, match=r"(?s)^define domain .*the host is as it was before"):
        deploy.apply(lab, target)
    assert _table(libvirtd, lab) is None and _table(libvirtd, lab, "ip6") is None
    assert "fd00:62:1::10" not in _forward_rules(libvirtd, "ip6tables")
    assert target.records.load(LAB).empty


def test_a_deployed_ipv6_forward_reaches_the_guest_through_libvirts_ip6tables(libvirtd, target, files, tmp_path):
    """As the IPv4 test above, in IPv6: with `nat6 on` libvirt's ip6tables LIBVIRT_FWI
    accepts only replies into the network and rejects the rest, so a client's connection
    to the host's [address]:2222 reaches the guest's port 22 only through the accept
    deploy inserts at the top of ip6tables' FORWARD (and the ip6 table's DNAT)."""
    for tool in ("ip", "nc", "ip6tables"):
        require_tool(tool)
    _, kernel = files
    lab = compile_lab(tmp_path, dual_stack_text(kernel, nat6=True))
    deploy.apply(lab, target)
    rules = _forward_rules(libvirtd, "ip6tables")
    assert f"topoc {LAB}: forward tcp 2222 to tiny:22" in rules.splitlines()[1], "first in FORWARD"
    fwi = subprocess.run(["nsenter", "-t", str(libvirtd.init_pid), "-n", "ip6tables", "-w", "-S", "LIBVIRT_FWI"],
                         capture_output=True, text=True, check=True).stdout
    assert f"-d fd00:62:1::/64 -o gn{RUN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" in fwi, fwi
    host = ["nsenter", "-t", str(libvirtd.init_pid), "-n"]
    guest, client = f"th{RUN}", f"td{RUN}"

    def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)

    try:
        run("ip", "netns", "add", guest)
        run("ip", "netns", "add", client)
        run(*host, "ip", "link", "add", f"vh{RUN}", "type", "veth", "peer", "name", "eth0")
        run(*host, "ip", "link", "set", f"vh{RUN}", "master", f"gn{RUN}", "up")
        run(*host, "ip", "link", "set", "eth0", "netns", guest)
        run("ip", "netns", "exec", guest, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=0",
            "net.ipv6.conf.eth0.accept_ra=0")
        run("ip", "-n", guest, "-6", "addr", "add", "fd00:62:1::10/64", "dev", "eth0", "nodad")
        run("ip", "-n", guest, "link", "set", "eth0", "up")
        run("ip", "-n", guest, "-6", "route", "add", "default", "via", "fd00:62:1::1")
        run(*host, "ip", "link", "add", f"vd{RUN}", "type", "veth", "peer", "name", "eth0")
        run(*host, "sysctl", "-q", "-w", f"net.ipv6.conf.vd{RUN}.disable_ipv6=0")
        run(*host, "ip", "-6", "addr", "add", "2001:db8:2::1/64", "dev", f"vd{RUN}", "nodad")
        run(*host, "ip", "link", "set", f"vd{RUN}", "up")
        run(*host, "ip", "link", "set", "eth0", "netns", client)
        run("ip", "netns", "exec", client, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=0")
        run("ip", "-n", client, "-6", "addr", "add", "2001:db8:2::2/64", "dev", "eth0", "nodad")
        run("ip", "-n", client, "link", "set", "eth0", "up")
        listener = subprocess.Popen(["ip", "netns", "exec", guest, "timeout", "30", "nc", "-6", "-k", "-l", "-p", "22"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            connected = False
            for _ in range(40):  # the bridge's own IPv6 address may still be in DAD
                if run("ip", "netns", "exec", client, "nc", "-6", "-z", "-w", "2", "2001:db8:2::1", "2222",
                       check=False).returncode == 0:
                    connected = True
                    break
                time.sleep(0.25)
            assert connected, "the IPv6 forward did not reach the guest's port 22"
            # Without deploy's accept, libvirt's LIBVIRT_FWI rejects the new connection.
            run(*host, "ip6tables", "-w", "-D", "FORWARD", "1")
            assert run("ip", "netns", "exec", client, "nc", "-6", "-z", "-w", "2", "2001:db8:2::1", "2222",
                       check=False).returncode != 0
        finally:
            listener.kill()
            listener.wait()
    finally:
        for ns in (guest, client):
            run("ip", "netns", "del", ns, check=False)
    deploy.destroy(LAB, target)
    assert f"topoc {LAB}" not in _forward_rules(libvirtd, "ip6tables")
