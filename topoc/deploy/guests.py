"""Deploy's steps for the guests and the host around them: the domain type, the storage
pool, each booted VM's overlay and seed volumes, and the lab's nft table on the host.

- Domain type: KVM when the connection's domain capabilities offer it, else QEMU (TCG
  emulation): https://libvirt.org/html/libvirt-libvirt-domain.html#virConnectGetDomainCapabilities
- Storage, through libvirt's storage API so that it works the same on a remote URI
  (https://libvirt.org/html/libvirt-libvirt-storage.html, volume XML:
  https://libvirt.org/formatstorage.html): a `dir` pool topoc creates for the lab
  (`<lab>-images`), unless told to use an existing one; per VM with an `image`, a qcow2
  overlay whose <backingStore> is the image (never written: qemu-img makes the overlay,
  the guest writes only to it); per VM with an image or a kernel, its NoCloud seed ISO
  (topoc.deploy.seed), uploaded with the stream API (virStorageVolUpload). On a remote
  URI, an image that is a local file is first uploaded into the pool as a volume of its
  own, and the overlay is backed by that.
- The host's nft table: the host backend's `topoc.nft`, which carries what libvirt has
  no element for (the port forwards), loaded with `nft -f` and undone with `nft delete
  table` (a host with an IPv6 network has an `ip6` table beside the inet one: each is
  planned, recorded, rolled back and removed on its own), on a local URI only (a
  remote host's firewall is refused with a diagnostic, never silently skipped); and,
  for a forward into a network libvirt firewalls, an accept in iptables' FORWARD chain
  ahead of libvirt's own rules (see below).

Every object made is recorded (topoc.deploy.records) and removed by destroy; a base
image is never written nor removed. Each step runs in the engine's Journal with its undo.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

from topoc.backends import cloudinit
from topoc.backends.host import nft_tables
from topoc.backends.libvirt import DEFAULT_DOMAIN_TYPE, default_pool, overlay_volume
from topoc.codes import IMAGE_MISSING, NO_SUCH_POOL, REMOTE_HOST_FIREWALL
from topoc.deploy import engine
from topoc.deploy.engine import (
    CREATE,
    NOTHING,
    REMOVE,
    UPDATE,
    Action,
    Change,
    HostCommandError,
    Journal,
    Plan,
    Target,
)
from topoc.deploy.records import Owned, Record, is_private_test_uri
from topoc.deploy.seed import SeedError, iso_image
from topoc.diagnostics import diagnostic
from topoc.front.span import UNKNOWN, Span
from topoc.model import firewall as fw
from topoc.model.family import FAMILIES
from topoc.model.ir import Lab, Vm
from topoc.model.topology import FIREWALLED_MODES

POOL, VOLUME, TABLE = "pool", "volume", "table"


# Where a pool topoc creates keeps its files on the hypervisor: libvirt's usual place.
POOL_ROOT = "/var/lib/libvirt/images"
# Chunks of an upload through a libvirt stream.
CHUNK = 1 << 20
QCOW2_MAGIC = b"QFI\xfb"

# Action orders (see engine.Action): made before the domains that use them (3), removed
# after the domains that used them are gone or redefined.
ORDER_MAKE, ORDER_TABLE_REMOVE, ORDER_VOLUME_REMOVE, ORDER_POOL_REMOVE = 2, 1, 4, 5


# --- where the hypervisor is -------------------------------------------------------------


def is_local(uri: str) -> bool:
    """A URI whose hypervisor is this machine: no host name (qemu:///system,
    qemu:///session, a ?socket= path), https://libvirt.org/uri.html."""
    return not urlsplit(uri).hostname


def _test_driver(target: Target) -> bool:
    """libvirt's test driver (test:///...), kept between commands or not: a host in
    memory, with no files, no volume data and no firewall. Nothing is ever run on this
    machine for it."""
    return is_private_test_uri(target.uri)


def domain_type(target: Target) -> str:
    """"kvm" when the host's QEMU offers KVM, else "qemu" (TCG). A driver without domain
    capabilities (the test driver) keeps the default."""
    lv = engine._libvirt()
    try:
        target.conn.getDomainCapabilities(None, None, None, "kvm", 0)
    except lv.libvirtError as e:
        if e.get_error_code() == lv.VIR_ERR_NO_SUPPORT:
            return DEFAULT_DOMAIN_TYPE
        return "qemu"
    return "kvm"


def host_command(target: Target, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command on the hypervisor: here, for a local URI (prefixed by
    target.host_prefix, e.g. nsenter into the namespace a sandboxed daemon runs in)."""
    try:
        # check=False: the callers read the exit status (nft list's says "no such table").
        return subprocess.run([*target.host_prefix, *argv], input=stdin, capture_output=True,
                              text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HostCommandError(f"{argv[0]}: {e}") from None


def _checked(target: Target, *argv: str, stdin: str | None = None) -> None:
    run = host_command(target, *argv, stdin=stdin)
    if run.returncode != 0:
        raise HostCommandError(f"`{' '.join(argv)}` failed: {run.stderr.strip() or run.returncode}")


# --- the lab's storage -----------------------------------------------------------------


def booted_vms(lab: Lab, host: str | None) -> list[Vm]:
    return sorted((v for v in lab.vms if v.host == host and v.booted), key=lambda v: v.name)


def image_format(path: str) -> str:
    """qcow2 or raw: the file's own magic where topoc can read it (a base image is
    read, never probed by QEMU: libvirt is told its format), else the file name."""
    try:
        with open(path, "rb") as f:
            return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"
    except OSError:
        return "qcow2" if path.lower().endswith(".qcow2") else "raw"


def virtual_size(path: str) -> int | None:
    """The disk size a guest sees: a qcow2 header's size field (a big-endian 64-bit
    number at byte 24, https://www.qemu.org/docs/master/interop/qcow2.html), a raw
    file's length; None when the file cannot be read here."""
    try:
        with open(path, "rb") as f:
            header = f.read(32)
            if header[:4] == QCOW2_MAGIC and len(header) == 32:
                return int.from_bytes(header[24:32], "big")
            return os.fstat(f.fileno()).st_size
    except OSError:
        return None


def _pool_xml(name: str) -> str:
    return (f"<pool type='dir'>\n  <name>{escape(name)}</name>\n"
            f"  <target>\n    <path>{escape(f'{POOL_ROOT}/{name}')}</path>\n  </target>\n</pool>\n")


def _overlay_xml(name: str, backing: str, backing_format: str, size: int | None) -> str:
    # The overlay is as large as its image (libvirt takes the backing image's size when
    # <capacity> is left out; its test driver requires one, so it is given when known).
    # https://libvirt.org/formatstorage.html#storage-volume-backing-store
    capacity = f"  <capacity unit='bytes'>{size}</capacity>\n" if size is not None else ""
    return (f"<volume>\n  <name>{escape(name)}</name>\n{capacity}  <target>\n    <format type='qcow2'/>\n  </target>\n"
            f"  <backingStore>\n    <path>{escape(backing)}</path>\n"
            f"    <format type={quoteattr(backing_format)}/>\n  </backingStore>\n</volume>\n")


def _raw_volume_xml(name: str, size: int) -> str:
    return (f"<volume>\n  <name>{escape(name)}</name>\n  <capacity unit='bytes'>{size}</capacity>\n"
            "  <target>\n    <format type='raw'/>\n  </target>\n</volume>\n")


def _upload(target: Target, vol: Any, size: int, chunks: Callable[[], Any]) -> None:
    """Write a volume's bytes through a libvirt stream (virStorageVolUpload)."""
    if _test_driver(target):
        return  # the test driver keeps no volume data (and cannot take an upload)
    stream = target.conn.newStream(0)
    vol.upload(stream, 0, size, 0)
    try:
        for chunk in chunks():
            view = memoryview(chunk)
            while view:
                sent = stream.send(view.tobytes())
                view = view[sent:]
        stream.finish()
    except BaseException:
        stream.abort()
        raise


def _file_chunks(path: str) -> Callable[[], Any]:
    def read() -> Any:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
    return read


@dataclass(frozen=True)
class WantedVolume:
    """A volume the lab needs in the pool."""

    vm: Vm
    name: str
    role: str  # "overlay", "seed" or "base"
    describe: str  # what it holds, for the plan and the record
    make: Callable[[Any, Any, Journal], Any]  # (conn, pool, journal) -> the volume


def _delete_volume(pool: Any, name: str) -> None:
    pool.refresh(0)
    pool.storageVolLookupByName(name).delete(0)


def _create_volume(target: Target, pool_name: str, name: str, xml: str,
                   fill: Callable[[Any], None] | None) -> Callable[[Any, Any, Journal], Any]:
    def run(conn: Any, pool: Any, journal: Journal) -> Any:
        vol = journal.run(f"create volume {pool_name}/{name}", lambda: pool.createXML(xml, 0),
                          lambda: _delete_volume(pool, name))
        if fill is not None:
            journal.run(f"upload volume {pool_name}/{name}", lambda: fill(vol))
        return vol
    return run


def _seed_volume(target: Target, lab: Lab, vm: Vm, pool_name: str) -> WantedVolume:
    name = cloudinit.seed_volume(lab, vm)
    try:
        data = iso_image(cloudinit.seed(lab, vm))
    except SeedError as e:
        raise engine.DeployError(str(e)) from None
    make = _create_volume(target, pool_name, name, _raw_volume_xml(name, len(data)),
                          lambda vol: _upload(target, vol, len(data), lambda: [data]))
    return WantedVolume(vm, name, "seed", f"cloud-init seed of {vm.name} (ISO 9660 cidata, {len(data)} bytes)", make)


def _base_volume_name(lab: Lab, image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()[:8]
    return f"{lab.name}-base-{digest}-{PurePath(image).name}"


# --- planning -----------------------------------------------------------------------------


@dataclass
class _Live:
    pools: dict[str, Any]  # name -> virStoragePool
    volumes: dict[str, set[str]]  # pool name -> its volumes' names


def _live_storage(target: Target) -> _Live:
    lv = engine._libvirt()
    try:
        pools = {p.name(): p for p in target.conn.listAllStoragePools(0)}
    except lv.libvirtError as e:
        if e.get_error_code() == lv.VIR_ERR_NO_SUPPORT:
            return _Live({}, {})
        raise
    volumes = {}
    for name, pool in pools.items():
        if pool.isActive():
            pool.refresh(0)
            volumes[name] = set(pool.listVolumes())
        else:
            volumes[name] = set()
    return _Live(pools, volumes)


def _span(vm: Vm, span: Span) -> Span:
    return vm.span if span == UNKNOWN else span


def _check_files(plan: Plan, vm: Vm, target: Target) -> bool:
    """The image, kernel and initrd of a VM on a local URI must be files topoc can read
    (on a remote URI the image must be one here, to upload; kernels are the host's)."""
    ok = True
    checks = [("image", vm.image, vm.image_span)]
    if is_local(target.uri) and not _test_driver(target):
        checks += [("kernel", vm.kernel, vm.kernel_span), ("initrd", vm.initrd, vm.initrd_span)]
    for what, path, span in checks:
        if path is None or _test_driver(target):
            continue
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            where = "on this machine" if is_local(target.uri) else "on this machine, to upload it"
            plan.conflicts.append(diagnostic(
                IMAGE_MISSING, _span(vm, span), f"the {what} of vm `{vm.name}`, {path}, is not a readable file {where}",
                hint=f"fix the path, or put the {what} there first"))
            ok = False
    return ok


def plan_guests(plan: Plan, lab: Lab, target: Target, record: Record, host: str | None,
                pool_option: str | None) -> Record:
    """Add the storage and host-table actions to the plan; return what the lab will own
    of these kinds (pools, volumes, tables) once the plan has run."""
    owned = Record(lab.name, target.uri)
    _plan_storage(plan, lab, target, record, host, pool_option, owned)
    _plan_table(plan, lab, target, record, host, owned)
    return owned


def _plan_storage(plan: Plan, lab: Lab, target: Target, record: Record, host: str | None,
                  pool_option: str | None, owned: Record) -> None:
    vms = booted_vms(lab, host)
    if not vms and not record.volumes and not record.pools:
        return  # nothing to make or remove: the host's storage is not even read
    live = _live_storage(target)
    pool_name = pool_option or default_pool(lab)
    pool_owned = record.pools.get(pool_name)
    wanted: list[WantedVolume] = []
    if vms:
        if pool_option is not None:
            if pool_option not in live.pools:
                plan.conflicts.append(diagnostic(
                    NO_SUCH_POOL, vms[0].span, f"{target.uri} has no storage pool named {pool_option}",
                    hint="name an existing pool (virsh pool-list --all), or leave out --pool and "
                         f"topoc creates {default_pool(lab)}"))
                return
            if not live.pools[pool_option].isActive():
                pool = live.pools[pool_option]
                plan.actions.append(Action(Change(UPDATE, POOL, pool_option, "start it (it is not running)"),
                                           ORDER_MAKE, lambda conn, journal: journal.run(
                                               f"start pool {pool_option}", lambda: pool.create(0), pool.destroy)))
        elif pool_name in live.pools:
            if pool_owned is None or pool_owned.uuid != live.pools[pool_name].UUIDString():
                plan.conflicts.append(diagnostic(
                    engine.FOREIGN_OBJECT, vms[0].span,
                    f"{target.uri} already has a storage pool named {pool_name} that this lab did not create",
                    hint=f"use it with --pool {pool_name}, or remove it (virsh pool-destroy/pool-undefine "
                         f"{pool_name}) if it is a leftover"))
                return
            owned.pools[pool_name] = pool_owned
            pool = live.pools[pool_name]
            if not pool.isActive():
                plan.actions.append(Action(Change(UPDATE, POOL, pool_name, "start it (it is not running)"),
                                           ORDER_MAKE, lambda conn, journal: journal.run(
                                               f"start pool {pool_name}", lambda: pool.create(0), pool.destroy)))
            else:
                plan.in_sync.append(Change(NOTHING, POOL, pool_name, "in sync"))
        else:
            xml = _pool_xml(pool_name)
            plan.actions.append(Action(Change(CREATE, POOL, pool_name, f"dir pool at {POOL_ROOT}/{pool_name}"),
                                       ORDER_MAKE, _define_pool(pool_name, xml, owned)))
            owned.pools[pool_name] = Owned("", xml)  # the UUID is libvirt's: filled in when made
        # Every VM checked (not `all()`, which stops at the first): all at once reported.
        missing = [vm for vm in vms if not _check_files(plan, vm, target)]
        if missing:
            return
        wanted = _wanted_volumes(lab, target, vms, pool_name)
    have = live.volumes.get(pool_name, set())
    for w in wanted:
        key = f"{pool_name}/{w.name}"
        if w.name in have:
            if key not in record.volumes:
                plan.conflicts.append(diagnostic(
                    engine.FOREIGN_OBJECT, w.vm.span,
                    f"pool {pool_name} on {target.uri} already has a volume {w.name} that this lab did not create",
                    hint=f"remove it (virsh vol-delete --pool {pool_name} {w.name}) if it is a leftover"))
                continue
            owned.volumes[key] = record.volumes[key]
            plan.in_sync.append(Change(NOTHING, VOLUME, key, "in sync"))
            made_from = record.volumes[key].xml
            if w.role == "overlay" and made_from is not None and made_from != w.describe:
                # The guest's disk lives in the overlay: never replaced behind its back.
                plan.notes.append(f"note: volume {key} stays as it is ({made_from}); the file now says "
                                  f"{w.describe.split(' (')[0]}: destroy the lab, or delete the volume, "
                                  "to start the VM from the new image")
            continue
        owned.volumes[key] = Owned(w.role, w.describe)
        plan.actions.append(Action(Change(CREATE, VOLUME, key, w.describe), ORDER_MAKE,
                                   _make_volume(target, pool_name, w)))
    # Volumes the lab made and no longer needs (a VM gone, a seed changed): removed after
    # the domains that used them are redefined. A base image is never among them.
    for key in sorted(record.volumes):
        if key in owned.volumes:
            continue
        pool_of, _, name = key.partition("/")
        if name in live.volumes.get(pool_of, set()):
            plan.actions.append(Action(Change(REMOVE, VOLUME, key, "no longer used"), ORDER_VOLUME_REMOVE,
                                       _remove_volume(live.pools[pool_of], key)))
    for name in sorted(record.pools):
        if name not in owned.pools and name in live.pools:
            plan.actions.append(Action(Change(REMOVE, POOL, name, "no VM of the lab uses it"),
                                       ORDER_POOL_REMOVE, _remove_pool(live.pools[name])))


def _wanted_volumes(lab: Lab, target: Target, vms: list[Vm], pool_name: str) -> list[WantedVolume]:
    wanted: list[WantedVolume] = []
    bases: dict[str, WantedVolume] = {}
    upload = not is_local(target.uri)
    for vm in vms:
        if vm.image is not None:
            fmt = image_format(vm.image)
            name = overlay_volume(lab, vm)
            if upload:
                base = bases.get(vm.image)
                if base is None:
                    base = _base_volume(target, lab, vm, pool_name, fmt)
                    bases[vm.image] = base
                    wanted.append(base)
                make = _overlay_on_volume(target, pool_name, name, base.name, fmt, virtual_size(vm.image))
                describe = f"qcow2 overlay of {vm.image} (uploaded as {base.name})"
            else:
                # The test driver reads no file: a nominal size stands in for the image's.
                overlay_size = virtual_size(vm.image) or (1 << 30 if _test_driver(target) else None)
                make = _create_volume(target, pool_name, name, _overlay_xml(name, vm.image, fmt, overlay_size), None)
                describe = f"qcow2 overlay of {vm.image} ({fmt}), which stays as it is"
            wanted.append(WantedVolume(vm, name, "overlay", describe, make))
        wanted.append(_seed_volume(target, lab, vm, pool_name))
    return wanted


def _base_volume(target: Target, lab: Lab, vm: Vm, pool_name: str, fmt: str) -> WantedVolume:
    """A local image copied into the pool of a remote host, byte for byte (so its own
    format stays), for the overlay to be backed by."""
    assert vm.image is not None
    image = vm.image
    name = _base_volume_name(lab, image)
    size = os.path.getsize(image)

    def fill(vol: Any) -> None:
        _upload(target, vol, size, _file_chunks(image))

    return WantedVolume(vm, name, "base", f"copy of {image} ({fmt}, {size} bytes), uploaded",
                        _create_volume(target, pool_name, name, _raw_volume_xml(name, size), fill))


def _overlay_on_volume(target: Target, pool_name: str, name: str, base: str, fmt: str,
                       size: int | None) -> Callable[[Any, Any, Journal], Any]:
    def run(conn: Any, pool: Any, journal: Journal) -> Any:
        path = pool.storageVolLookupByName(base).path()
        return _create_volume(target, pool_name, name, _overlay_xml(name, path, fmt, size), None)(conn, pool, journal)
    return run


def _pool_of(conn: Any, name: str) -> Any:
    return conn.storagePoolLookupByName(name)


def _make_volume(target: Target, pool_name: str, w: WantedVolume) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        w.make(conn, _pool_of(conn, pool_name), journal)
    return run


def _define_pool(name: str, xml: str, owned: Record) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        pool = journal.run(f"define pool {name}", lambda: conn.storagePoolDefineXML(xml, 0),
                           lambda: conn.storagePoolLookupByName(name).undefine())
        # Build makes the directory; undone (pool-delete) only once it is empty again.
        journal.run(f"build pool {name}", lambda: pool.build(0), lambda: pool.delete(0))
        journal.run(f"start pool {name}", lambda: pool.create(0), pool.destroy)
        journal.run(f"autostart pool {name}", lambda: pool.setAutostart(1), lambda: pool.setAutostart(0))
        owned.pools[name] = Owned(pool.UUIDString(), xml)
    return run


def _remove_volume(pool: Any, key: str) -> Callable[[Any, Journal], None]:
    name = key.partition("/")[2]

    def run(conn: Any, journal: Journal) -> None:
        # No undo: a volume's contents cannot be put back. That is why removals come
        # last, after every step that could still fail and roll back.
        journal.run(f"delete volume {key}", lambda: _delete_volume(pool, name))
    return run


def _remove_pool(pool: Any) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        name = pool.name()
        if pool.isActive():
            journal.run(f"stop pool {name}", pool.destroy, lambda: pool.create(0))
        # pool-delete removes the (now empty) directory; a pool with files of others in
        # it fails here and the whole destroy rolls back.
        journal.run(f"delete pool {name}", lambda: pool.delete(0), lambda: pool.build(0))
        journal.run(f"undefine pool {name}", pool.undefine,
                    lambda: conn.storagePoolDefineXML(pool.XMLDesc(0), 0))
    return run


# --- the host's nft table ------------------------------------------------------------------


def needs_host_table(lab: Lab, host: str | None) -> list[str]:
    """What in the lab only the host's own nft table can do (libvirt has no element for
    it), as phrases for the plan: the port forwards to VMs on this host, and the
    masquerade of routed and open networks. (Anything else
    the host backend puts in topoc.nft that libvirt does not do itself belongs here too,
    so that deploy loads the table for it; the rest of the table mirrors libvirt's own
    rules, which libvirt installs anyway.)"""
    found = []
    for fwd in lab.forwards:
        vm = lab.node(fwd.vm)
        if isinstance(vm, Vm) and vm.host == host:
            found.append(f"forward {fwd.protocol} {fwd.port} to {fwd.vm}:{fwd.vm_port}")
    # `masquerade` on a routed or open network: libvirt NATs only its nat networks.
    found += [f"masquerade of network {n.name}" for n in lab.networks
              if n.masquerade and n.host == host]
    return found


def _table_exists(target: Target, key: str) -> bool:
    family, name = key.split()
    return host_command(target, "nft", "list", "table", family, name).returncode == 0


def _load_table(target: Target, text: str) -> None:
    _checked(target, "nft", "-f", "-", stdin=text)


def _delete_table(target: Target, key: str) -> None:
    family, name = key.split()
    _checked(target, "nft", "delete", "table", family, name)


# --- libvirt's own forward rules ------------------------------------------------------------
#
# libvirt 9 puts its firewall for a nat or routed network in iptables' filter table
# (chain LIBVIRT_FWI, jumped to from FORWARD): into the bridge it accepts only replies
# (nat) or what comes from `via` (routed), and rejects the rest
# (https://libvirt.org/firewall.html). A reject in any table is final, so the accept of
# a DNATed connection in the lab's own nft table cannot let it through; libvirt's way is
# an accept in FORWARD ahead of its chains (https://wiki.libvirt.org/Networking.html,
# "Forwarding Incoming Connections"). Deploy inserts one per forward, for exactly the
# connections the lab's prerouting rule DNATed (conntrack state DNAT), and deletes it
# again on undo and destroy. An IPv6 forward's accept goes in ip6tables' FORWARD, ahead
# of libvirt's ip6tables LIBVIRT_FWI (libvirt 9.0 installs the same chains for IPv6:
# bridge_driver_linux.c networkAddGeneralIPv6FirewallRules).
IPTABLES_KEY = "iptables FORWARD "
IP6TABLES_KEY = "ip6tables FORWARD "


def forward_accepts(lab: Lab, host: str | None) -> list[tuple[str, list[str]]]:
    """(command, rule spec without -I/-D) of the FORWARD accepts for the lab's forwards
    on `host` into networks libvirt firewalls, in each family the forward has a DNAT
    target in (topoc.model.firewall): iptables' first, then ip6tables'."""
    rules: list[tuple[str, list[str]]] = []
    if host is None:
        return rules
    for family in FAMILIES:
        for pf in fw.host_forwards(lab, host, family)[0]:
            fwd, bridge = pf.forward, pf.network.bridge
            if pf.network.mode not in FIREWALLED_MODES or bridge is None:
                continue
            comment = f"topoc {lab.name}: forward {fwd.protocol} {fwd.port} to {fwd.vm}:{fwd.vm_port}"
            rules.append((family.facts.iptables,
                          ["-o", bridge, "-d", str(pf.address), "-p", fwd.protocol,
                           "--dport", str(fwd.vm_port), "-m", "conntrack", "--ctstate", "DNAT",
                           "-m", "comment", "--comment", comment, "-j", "ACCEPT"]))
    return rules


def _insert_rule_step(target: Target, command: str, spec: list[str]) -> Callable[[Any, Journal], None]:
    """The deploy step that inserts one FORWARD accept, with its undo."""
    def step(conn: Any, journal: Journal) -> None:
        journal.run(f"insert {command} FORWARD rule: {spec[spec.index('--comment') + 1]}",
                    lambda: _insert_rule(target, command, spec),
                    lambda: _delete_rule(target, command, spec))
    return step


def _rule_key(command: str, spec: list[str]) -> str:
    return f"{command} FORWARD " + shlex.join(spec)


def _is_rule(key: str) -> bool:
    return key.startswith((IPTABLES_KEY, IP6TABLES_KEY))


def _rule_of(key: str) -> tuple[str, list[str]]:
    """(command, spec) of a recorded rule's key."""
    command = key.split(" ", 1)[0]
    return command, shlex.split(key.removeprefix(f"{command} FORWARD "))


RULE = "iptables-rule"


def _rule_name(command: str, spec: list[str]) -> str:
    """The rule as the plan names it: its spec without the comment (an ip6tables one
    says so)."""
    i = spec.index("--comment")
    prefix = "" if command == "iptables" else f"{command} "
    return prefix + "FORWARD " + shlex.join(spec[:i - 2] + spec[i + 2:])


def _rule_exists(target: Target, command: str, spec: list[str]) -> bool:
    return host_command(target, command, "-w", "-C", "FORWARD", *spec).returncode == 0


def _insert_rule(target: Target, command: str, spec: list[str]) -> None:
    _checked(target, command, "-w", "-I", "FORWARD", "1", *spec)


def _delete_rule(target: Target, command: str, spec: list[str]) -> None:
    _checked(target, command, "-w", "-D", "FORWARD", *spec)


def _plan_forward_accepts(plan: Plan, lab: Lab, target: Target, record: Record, host: str | None,
                          owned: Record) -> None:
    for command, spec in forward_accepts(lab, host):
        key = _rule_key(command, spec)
        owned.tables[key] = Owned("rule", None)
        if key in record.tables and _rule_exists(target, command, spec):
            plan.in_sync.append(Change(NOTHING, RULE, _rule_name(command, spec), "in sync"))
            continue
        comment = spec[spec.index("--comment") + 1]
        plan.actions.append(Action(
            Change(CREATE, RULE, _rule_name(command, spec),
                   f"accept the DNATed connection ahead of libvirt's LIBVIRT_FWI ({comment})"),
            ORDER_MAKE, _insert_rule_step(target, command, spec)))


def _plan_table(plan: Plan, lab: Lab, target: Target, record: Record, host: str | None,
                owned: Record) -> None:
    needs = needs_host_table(lab, host) if host is not None and lab.node(host) is not None else []
    if needs and _test_driver(target):
        plan.notes.append(f"note: {', '.join(needs)} not applied: {target.uri} is libvirt's test driver, "
                          f"not a host with a firewall (host/topoc.nft is the table deploy loads on a real one)")
        return
    if needs and not is_local(target.uri):
        plan.conflicts.append(diagnostic(
            REMOTE_HOST_FIREWALL, lab.forwards[0].span if lab.forwards else lab.span,
            f"{', '.join(needs)}: nftables rules on the host, and {target.uri} is a remote host "
            "where topoc cannot load them through libvirt",
            hint=f"run topoc deploy on {urlsplit(target.uri).hostname} itself, or apply host/topoc.nft "
                 "there with `nft -f` (topoc build writes it) and remove the forwards from this file"))
        return
    if needs:
        assert host is not None
        # The inet table, and for a host with an IPv6 network the ip6 one beside it
        # (libvirt's ip6tables rules): each loaded, recorded and removed on its own.
        for key, text in nft_tables(lab, host).items():
            _plan_one_table(plan, lab, target, record, owned, key, text, needs)
        _plan_forward_accepts(plan, lab, target, record, host, owned)
    for old_key in sorted(record.tables):
        if old_key not in owned.tables and not _test_driver(target) and is_local(target.uri) \
                and _owned_exists(target, old_key):
            plan.actions.append(Action(Change(REMOVE, *_shown(old_key), "the file no longer has it"),
                                       ORDER_TABLE_REMOVE, _remove_table(target, old_key, record.tables[old_key])))


def _plan_one_table(plan: Plan, lab: Lab, target: Target, record: Record, owned: Record, key: str,
                    text: str, needs: list[str]) -> None:
    """Load one of the lab's nft tables (`key`: "FAMILY NAME"), reload it when its text
    changed, or leave it in sync; refuse a table of that name deploy did not load."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    previous = record.tables.get(key)
    exists = _table_exists(target, key)
    owned.tables[key] = Owned(digest, text)
    detail = f"load host/topoc.nft ({'; '.join(needs)}) with nft -f; undo: nft delete table {key}"
    if exists and previous is None:
        plan.conflicts.append(diagnostic(
            engine.FOREIGN_OBJECT, lab.span, f"the host already has the nft table {key}, which this "
            "deploy did not load (up.sh loads it on the shell path)",
            hint=f"run host/down.sh, or `nft delete table {key}`, if it is a leftover"))
    elif exists and previous is not None and previous.uuid == digest:
        plan.in_sync.append(Change(NOTHING, TABLE, key, "in sync"))
    elif exists and previous is not None:
        old = previous.xml or ""
        plan.actions.append(Action(Change(UPDATE, TABLE, key, "reload: " + detail), ORDER_MAKE,
                                   lambda conn, journal: journal.run(
                                       f"reload nft table {key}", lambda: _load_table(target, text),
                                       lambda: _load_table(target, old))))
    else:
        plan.actions.append(Action(Change(CREATE, TABLE, key, detail), ORDER_MAKE,
                                   lambda conn, journal: journal.run(
                                       f"load nft table {key}", lambda: _load_table(target, text),
                                       lambda: _delete_table(target, key))))


def _shown(key: str) -> tuple[str, str]:
    """(kind, name) of a recorded table or rule, as the plan shows it."""
    return (RULE, _rule_name(*_rule_of(key))) if _is_rule(key) else (TABLE, key)


def _owned_exists(target: Target, key: str) -> bool:
    if _is_rule(key):
        return _rule_exists(target, *_rule_of(key))
    return _table_exists(target, key)


def _remove_table(target: Target, key: str, previous: Owned) -> Callable[[Any, Journal], None]:
    """Remove the nft table, or one of the iptables FORWARD rules, deploy made."""
    def run(conn: Any, journal: Journal) -> None:
        if _is_rule(key):
            command, spec = _rule_of(key)
            journal.run(f"delete {command} FORWARD rule {spec[spec.index('--comment') + 1]}",
                        lambda: _delete_rule(target, command, spec), lambda: _insert_rule(target, command, spec))
            return
        journal.run(f"delete nft table {key}", lambda: _delete_table(target, key),
                    (lambda: _load_table(target, previous.xml or "")) if previous.xml else None)
    return run


# --- status ---------------------------------------------------------------------------------


def status_rows(record: Record, target: Target) -> list[engine.ObjectStatus]:
    """The pool, volumes, nft table and iptables rules the lab made, as the host has them."""
    rows: list[engine.ObjectStatus] = []
    live = _live_storage(target) if (record.volumes or record.pools) else _Live({}, {})
    for name in sorted(record.pools):
        pool = live.pools.get(name)
        rows.append(engine.ObjectStatus(POOL, name, pool is not None, bool(pool and pool.isActive()),
                                        bool(pool and pool.autostart()), pool is not None,
                                        note="" if pool else "gone from the host"))
    for key in sorted(record.volumes):
        pool_name, _, name = key.partition("/")
        there = name in live.volumes.get(pool_name, set())
        rows.append(engine.ObjectStatus(VOLUME, key, there, there, False, there,
                                        note=record.volumes[key].xml or "" if there else "gone from the host"))
    for key in sorted(record.tables):
        kind, name = _shown(key)
        if _test_driver(target) or not is_local(target.uri):
            rows.append(engine.ObjectStatus(kind, name, False, False, False, True, note="not on this machine"))
            continue
        there = _owned_exists(target, key)
        rows.append(engine.ObjectStatus(kind, name, there, there, False, there,
                                        note="" if there else "gone from the host"))
    return rows


# --- destroy ------------------------------------------------------------------------------


def destroy_actions(record: Record, target: Target, left_alone: list[str]) -> list[Action]:
    """Remove the volumes, pool and table the lab made, after its domains and networks."""
    actions: list[Action] = []
    live = _live_storage(target) if (record.volumes or record.pools) else _Live({}, {})
    for key in sorted(record.volumes):
        pool_name, _, name = key.partition("/")
        if name in live.volumes.get(pool_name, set()):
            actions.append(Action(Change(REMOVE, VOLUME, key, record.volumes[key].xml or "volume"),
                                  ORDER_VOLUME_REMOVE, _remove_volume(live.pools[pool_name], key)))
    for name in sorted(record.pools):
        pool = live.pools.get(name)
        if pool is None:
            continue
        if record.pools[name].uuid not in ("", pool.UUIDString()):
            left_alone.append(f"pool {name}: not the one this lab created (another UUID)")
            continue
        actions.append(Action(Change(REMOVE, POOL, name, "the lab's storage pool"), ORDER_POOL_REMOVE,
                              _remove_pool(pool)))
    for key in sorted(record.tables):
        if _test_driver(target) or not is_local(target.uri):
            left_alone.append(f"nft table {key}: not on this machine; remove it there with `nft delete table {key}`")
            continue
        if _owned_exists(target, key):
            what = (f"an {_rule_of(key)[0]} FORWARD rule of the lab" if _is_rule(key)
                    else "the lab's nft table")
            actions.append(Action(Change(REMOVE, *_shown(key), what), ORDER_TABLE_REMOVE,
                                  _remove_table(target, key, record.tables[key])))
    return actions

