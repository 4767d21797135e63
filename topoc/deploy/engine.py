"""Deploy: make a libvirt connection hold the lab's networks and domains, all or nothing.

`plan` compares the lab with the host and lists each change; `apply` runs a plan after
a pre-flight against the live host (a subnet or bridge another network or a host
interface already uses is refused before anything is defined) and undoes every step it
took when one fails; `status` reports each object's state; `destroy` removes what the
lab owns and nothing else. Ownership comes from topoc.deploy.records (never from a
name alone), the facts compared from topoc.deploy.facts, the XML from the libvirt backend.

The only module of topoc that imports libvirt, and only inside functions, so compiling,
checking and building need no libvirt. API: https://libvirt.org/html/libvirt-libvirt-network.html
and https://libvirt.org/html/libvirt-libvirt-domain.html.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from topoc.backends.libvirt import DEFAULT_DOMAIN_TYPE, carried_network_xml, domain_xml, network_xml
from topoc.codes import FOREIGN_OBJECT, HOST_BRIDGE_CLASH, HOST_BRIDGE_MISSING, HOST_SUBNET_CLASH
from topoc.deploy import facts as dx
from topoc.deploy import testhost
from topoc.deploy.records import (
    FileRecords,
    Owned,
    Record,
    RecordError,
    RecordStore,
    default_state_dir,
    is_private_test_uri,
    records_for,
)
from topoc.deploy.transport import HostCommandError
from topoc.diagnostics import Diagnostic, diagnostic
from topoc.front.span import UNKNOWN, Span
from topoc.model import naming
from topoc.model.family import IPV6, IPNetwork, family_of
from topoc.model.ir import Lab, Mode
from topoc.model.platform import DEFAULT_PROFILE

NETWORK, DOMAIN = "network", "domain"
CREATE, UPDATE, RECREATE, REMOVE, NOTHING = "create", "update", "recreate", "remove", "nothing"
ADOPT = "adopt"  # an existing object of the file's name, taken into the lab (--adopt)


class DeployError(Exception):
    """libvirt or the host stands in the way: a message for people (exit code 2)."""


class Refused(Exception):
    """The lab clashes with what the host already has; nothing was changed (exit 1)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(f"{len(diagnostics)} clash(es) with the host")
        self.diagnostics = diagnostics


# --- libvirt, imported lazily ---------------------------------------------------------


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise DeployError("libvirt-python is not installed; install topoc with its deploy "
                          "extra: pip install 'topoc[deploy]'") from None
    # libvirt prints every error to stderr by default; topoc reports them itself.
    # https://libvirt.org/html/libvirt-virterror.html#virSetErrorFunc
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def explain(error: Exception, uri: str, doing: str) -> str:
    """A libvirtError as a message that says what to do about it.
    Codes: https://libvirt.org/html/libvirt-virterror.html#virErrorNumber"""
    lv = _libvirt()
    code = error.get_error_code() if isinstance(error, lv.libvirtError) else None
    message = (error.get_error_message() if isinstance(error, lv.libvirtError) else None) or str(error)
    # Permission first: a socket we may not open is also a connection that failed.
    if code in (lv.VIR_ERR_AUTH_FAILED, lv.VIR_ERR_AUTH_CANCELLED, lv.VIR_ERR_AUTH_UNAVAILABLE,
                lv.VIR_ERR_ACCESS_DENIED, lv.VIR_ERR_OPERATION_DENIED) or "Permission denied" in message:
        return (f"permission denied on {uri} while trying to {doing}: {message}\n"
                "  run as root, or as a member of the libvirt group")
    # Only when connecting: later, a socket that fails is the daemon's helper's (virtlogd).
    if doing == "connect" and (code == lv.VIR_ERR_NO_CONNECT or "Connection refused" in message
                               or "Failed to connect socket" in message):
        return (f"cannot connect to {uri}: {message}\n"
                "  is libvirtd running there (systemctl start libvirtd), and is --connect right?")
    if code == lv.VIR_ERR_NO_SUPPORT:
        return f"the driver behind {uri} cannot {doing}: {message}"
    return f"{doing} on {uri} failed: {message}"


@dataclass
class Target:
    """A libvirt connection and the ownership records that go with it."""

    conn: Any
    uri: str
    records: RecordStore
    saved_in: Path | None = None  # the state folder test:///default is kept in (topoc.deploy.testhost)
    # How to run a command on the hypervisor of a local URI (nft for the lab's table):
    # nothing for this machine; e.g. nsenter into the namespaces of a sandboxed daemon.
    host_prefix: tuple[str, ...] = ()

    @property
    def private(self) -> bool:
        """libvirt's test driver: a fresh in-memory host per connection, gone with it
        (unless topoc keeps it between commands)."""
        return is_private_test_uri(self.uri) and self.saved_in is None


def connect(uri: str, state_dir: Path | None = None, *, remember_test_host: bool = False,
            read_only: bool = False) -> Target:
    """A connection. With `remember_test_host`, test:///default is the host the last
    command left (topoc.deploy.testhost), its records on disk; `remember` saves it.
    `read_only`: libvirt refuses every change on it (virConnectOpenReadOnly); the kept
    test host is a private copy in this process either way."""
    lv = _libvirt()
    if remember_test_host and uri == testhost.DEFAULT_URI:
        directory = state_dir or default_state_dir()
        try:
            conn = testhost.open_default(lv, directory)
        except testhost.TestHostError as e:
            raise DeployError(str(e)) from None
        except lv.libvirtError as e:
            raise DeployError(explain(e, uri, "connect")) from None
        return Target(conn, uri, FileRecords(uri, directory), directory)
    try:
        conn = lv.openReadOnly(uri) if read_only else lv.open(uri)
    except lv.libvirtError as e:
        raise DeployError(explain(e, uri, "connect")) from None
    return Target(conn, uri, records_for(uri, state_dir))


def remember(target: Target) -> None:
    """Keep the test host for the next command (nothing to do on any other host)."""
    if target.saved_in is None:
        return
    lv = _libvirt()
    try:
        testhost.save(lv, target.conn, target.saved_in)
    except testhost.TestHostError as e:
        raise DeployError(str(e)) from None
    except lv.libvirtError as e:
        raise DeployError(explain(e, target.uri, "save the test host")) from None


@contextlib.contextmanager
def _libvirt_errors(target: Target, doing: str) -> Iterator[None]:
    """Reading the host: a libvirtError becomes a DeployError saying what was read."""
    lv = _libvirt()
    try:
        yield
    except lv.libvirtError as e:
        raise DeployError(explain(e, target.uri, doing)) from None
    except (RecordError, HostCommandError) as e:
        raise DeployError(str(e)) from None


# --- what the host has ----------------------------------------------------------------


@dataclass(frozen=True)
class Live:
    """A network or domain as the host has it now."""

    kind: str
    name: str
    uuid: str
    xml: str  # the persistent (inactive) configuration
    active: bool
    autostart: bool
    handle: Any = field(compare=False, repr=False)

    @property
    def lab(self) -> str | None:
        """The lab its <metadata><topoc:lab name=.../> names, if any."""
        return dx.lab_marker(self.xml)


def _network_config(net: Any) -> str:
    """The network's persistent configuration (what a restart would run)."""
    lv = _libvirt()
    try:
        return net.XMLDesc(lv.VIR_NETWORK_XML_INACTIVE)
    except lv.libvirtError as e:
        # The test driver knows no flags ("unsupported flags"); its live XML is its config.
        if e.get_error_code() not in (lv.VIR_ERR_INVALID_ARG, lv.VIR_ERR_NO_SUPPORT):
            raise
        return net.XMLDesc(0)


def _shows_inactive_config(net: Any) -> bool:
    """Whether the driver reads a network's persistent definition apart from the running
    one (the test driver does not: it shows only what runs)."""
    lv = _libvirt()
    try:
        net.XMLDesc(lv.VIR_NETWORK_XML_INACTIVE)
    except lv.libvirtError as e:
        if e.get_error_code() not in (lv.VIR_ERR_INVALID_ARG, lv.VIR_ERR_NO_SUPPORT):
            raise
        return False
    return True


def _live_networks(conn: Any) -> dict[str, Live]:
    found = {}
    for net in conn.listAllNetworks(0):
        xml = _network_config(net)
        found[net.name()] = Live(NETWORK, net.name(), net.UUIDString(), xml, bool(net.isActive()),
                                 bool(net.autostart()), net)
    return found


def _live_domains(conn: Any) -> dict[str, Live]:
    lv = _libvirt()
    found = {}
    for dom in conn.listAllDomains(0):
        xml = dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)
        found[dom.name()] = Live(DOMAIN, dom.name(), dom.UUIDString(), xml, bool(dom.isActive()),
                                 bool(dom.autostart()), dom)
    return found


def _host_interfaces(conn: Any) -> tuple[list[dx.InterfaceFacts], str | None]:
    """The host's interfaces where the driver reports them, else a note saying why not."""
    lv = _libvirt()
    try:
        return [dx.interface_facts(i.XMLDesc(0)) for i in conn.listAllInterfaces(0)], None
    except lv.libvirtError as e:
        return [], f"host interfaces not checked: {e.get_error_message() or e}"


def _owns(record: Record, live: Live, lab: str) -> bool:
    """The lab's own object: its record lists the name with this UUID, and the object's
    metadata names the lab (the record alone tells topoc's objects from look-alikes
    defined by hand from `topoc build` output, which carry the same metadata and UUID)."""
    owned = record.of_kind(live.kind).get(live.name)
    return owned is not None and owned.uuid == live.uuid and live.lab == lab


# --- what the lab wants ---------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    kind: str
    name: str  # the libvirt name
    xml: str
    uuid: str
    span: Span
    bridge_span: Span
    address_span: Span
    uplink: str | None = None  # a bridged network's host nic (`mode bridged to NIC`)
    address6_span: Span | None = None  # its IPv6 `address` (None: address_span)


def hypervisor(lab: Lab, host: str | None) -> str | None:
    """The lab's host to deploy: the one asked for, or the only one there is."""
    used = sorted({n.host for n in lab.networks if n.managed and n.host} | {v.host for v in lab.vms})
    if host is not None:
        if host not in {h.name for h in lab.hosts} | set(used):
            raise DeployError(f"lab {lab.name} has no host {host!r} (its hosts: "
                              f"{', '.join(h.name for h in lab.hosts) or 'none'})")
        return host
    if len(used) > 1:
        raise DeployError(f"lab {lab.name} has VMs and networks on {len(used)} hosts "
                          f"({', '.join(used)}); pick the one this connection is with --host")
    return used[0] if used else None


def wanted(lab: Lab, host: str | None, *, domain_type: str = DEFAULT_DOMAIN_TYPE,
           pool: str | None = None) -> list[Wanted]:
    """The lab's networks, then its domains, on one host, as libvirt should have them
    (domains of `domain_type`, their volumes in `pool`, default: the lab's own)."""
    out = []
    for network in sorted(lab.networks, key=lambda n: n.name):
        if network.managed and host is not None and host in network.extra_hosts:
            # A network on several hosts, on one of its others: libvirt's bridge mode on
            # the bridge topoc makes there (topoc.deploy.multi's host steps).
            xml = carried_network_xml(lab, network, host)
            out.append(Wanted(NETWORK, naming.libvirt_name(lab.name, network.name, network.exact_name), xml,
                              dx.uuid_of(xml) or naming.object_uuid(lab.name, NETWORK, network.name),
                              network.span, _known(network.bridge_span, network.span),
                              _known(network.address_span, network.span)))
        elif network.managed and network.host == host:
            xml = network_xml(lab, network)
            out.append(Wanted(NETWORK, naming.libvirt_name(lab.name, network.name, network.exact_name), xml,
                              dx.uuid_of(xml) or naming.object_uuid(lab.name, NETWORK, network.name),
                              network.span, _known(network.bridge_span, network.span),
                              _known(network.address_span, network.span),
                              network.via if network.mode is Mode.BRIDGED else None,
                              _known(network.address6_span, network.span)))
    for vm in sorted(lab.vms, key=lambda v: v.name):
        if vm.host == host:
            xml = domain_xml(lab, vm, replace(DEFAULT_PROFILE, domain_type=domain_type), pool=pool)
            out.append(Wanted(DOMAIN, naming.libvirt_name(lab.name, vm.name, vm.exact_name), xml,
                              dx.uuid_of(xml) or naming.object_uuid(lab.name, DOMAIN, vm.name),
                              vm.span, vm.span, vm.span))
    return out


def _known(span: Span, fallback: Span) -> Span:
    """A statement's span, or its block's when the value was derived (no statement)."""
    return fallback if span == UNKNOWN else span


def _all_lab_names(lab: Lab) -> set[str]:
    """Every libvirt name the lab has on any host: objects of other hosts that share
    this connection are not removals."""
    return ({naming.libvirt_name(lab.name, n.name, n.exact_name) for n in lab.networks if n.managed}
            | {naming.libvirt_name(lab.name, v.name, v.exact_name) for v in lab.vms})


# --- the plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    action: str  # create, update, recreate, remove, nothing
    kind: str  # network, domain
    name: str
    detail: str
    diff: str = ""

    def to_json(self) -> dict[str, str]:
        return {"action": self.action, "kind": self.kind, "name": self.name,
                "detail": self.detail, "diff": self.diff}


class Journal:
    """The steps an apply took, each with its undo, so a failure can put the host back."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self.steps: list[str] = []

    def run(self, what: str, do: Callable[[], Any], undo: Callable[[], object] | None = None) -> Any:
        lv = _libvirt()
        try:
            result = do()
        except lv.libvirtError as e:
            raise StepFailed(what, e) from None
        self.steps.append(what)
        if undo is not None:
            self._undo.append((what, undo))
        return result

    def rollback(self) -> list[str]:
        """Undo every step, newest first; what could not be undone, as messages."""
        lv = _libvirt()
        problems = []
        for what, undo in reversed(self._undo):
            try:
                undo()
            except lv.libvirtError as e:
                problems.append(f"could not undo '{what}': {e.get_error_message() or e}")
            except HostCommandError as e:  # a host-level step (topoc.deploy.transport)
                problems.append(f"could not undo '{what}': {e}")
        self._undo.clear()
        return problems


class StepFailed(Exception):
    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(step)
        self.step = step
        self.error = error


@dataclass
class Action:
    """One change of the plan and how to make it."""

    change: Change
    # 0 domain removals, 1 network (and nft table) removals, 2 networks, then the pool,
    # volumes and nft table (topoc.deploy.guests), 3 domains, 4 volume removals, 5 pool removal
    order: int
    run: Callable[[Any, Journal], None]


@dataclass
class Plan:
    lab: str
    uri: str
    host: str | None
    actions: list[Action] = field(default_factory=list)
    in_sync: list[Change] = field(default_factory=list)
    conflicts: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    record: Record | None = None  # what the lab owns now
    final: Record | None = None  # what it will own when the plan has run

    @property
    def changes(self) -> list[Change]:
        return [a.change for a in sorted(self.actions, key=lambda a: a.order)]

    def to_json(self) -> dict:
        return {"changes": [c.to_json() for c in self.changes]}


# Each step below is one libvirt call with the call that undoes it. Networks:
# virNetworkDefineXML (define, or redefine under the same UUID), virNetworkSetAutostart,
# virNetworkCreate (start), virNetworkDestroy (stop), virNetworkUndefine, virNetworkUpdate
# (https://libvirt.org/html/libvirt-libvirt-network.html). Domains: virDomainDefineXML,
# virDomainCreate, virDomainDestroy, virDomainUndefine
# (https://libvirt.org/html/libvirt-libvirt-domain.html). A redefined running object
# keeps running on its old configuration until it restarts.


def _define_network(xml: str) -> Callable[[Any, Journal], Any]:
    def run(conn: Any, journal: Journal) -> Any:
        name = dx.parse(xml).findtext("name")
        assert name is not None  # a wanted network's XML always has its <name> (libvirt requires one)
        net = journal.run(f"define network {name}", lambda: conn.networkDefineXML(xml),
                          lambda: _undefine_network(conn, name))
        journal.run(f"autostart network {name}", lambda: net.setAutostart(1), lambda: net.setAutostart(0))
        journal.run(f"start network {name}", net.create, net.destroy)
        return net
    return run


def _undefine_network(conn: Any, name: str) -> None:
    net = conn.networkLookupByName(name)
    if net.isActive():
        net.destroy()
    net.undefine()


def _restore_network(conn: Any, live: Live) -> None:
    net = conn.networkDefineXML(live.xml)
    if live.autostart:
        net.setAutostart(1)


def _ensure_running(live: Live, journal: Journal) -> None:
    net = live.handle
    if not live.autostart:
        journal.run(f"autostart network {live.name}", lambda: net.setAutostart(1), lambda: net.setAutostart(0))
    if not live.active:
        journal.run(f"start network {live.name}", net.create, net.destroy)


def _update_network_live(live: Live, edits: list[dx.DhcpHostChange]) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        lv = _libvirt()
        # AFFECT_LIVE only on a running network: libvirt refuses it on an inactive one.
        flags = lv.VIR_NETWORK_UPDATE_AFFECT_CONFIG | (lv.VIR_NETWORK_UPDATE_AFFECT_LIVE if live.active else 0)
        section = lv.VIR_NETWORK_SECTION_IP_DHCP_HOST
        commands = {"add": lv.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, "delete": lv.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                    "modify": lv.VIR_NETWORK_UPDATE_COMMAND_MODIFY}
        undo_commands = {"add": ("delete", "new"), "delete": ("add", "old"), "modify": ("modify", "old")}
        net = live.handle
        for edit in edits:
            xml = edit.new if edit.command != "delete" else edit.old
            undo_command, undo_side = undo_commands[edit.command]
            undo_xml = getattr(edit, undo_side)
            journal.run(
                f"update network {live.name}: DHCP host {edit.describe()}",
                # partial binds this edit's values now, as default arguments of a lambda would
                # (mypy cannot type a lambda with defaults as the Callable[[], ...] run takes).
                functools.partial(net.update, commands[edit.command], section, edit.ip_index, xml, flags),
                functools.partial(net.update, commands[undo_command], section, edit.ip_index, undo_xml, flags))
        _ensure_running(live, journal)
    return run


def _recreate_network(live: Live, xml: str) -> Callable[[Any, Journal], None]:
    # Stop first, then redefine, then start: undone in reverse, the old definition is in
    # place again before the network starts once more.
    def run(conn: Any, journal: Journal) -> None:
        net = live.handle
        if live.active:
            journal.run(f"stop network {live.name}", net.destroy, net.create)
        journal.run(f"redefine network {live.name}", lambda: conn.networkDefineXML(xml),
                    lambda: conn.networkDefineXML(live.xml))
        if not live.autostart:
            journal.run(f"autostart network {live.name}", lambda: net.setAutostart(1), lambda: net.setAutostart(0))
        journal.run(f"start network {live.name}", net.create, net.destroy)
    return run


def _remove_network(live: Live) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        net = live.handle
        if live.active:
            journal.run(f"stop network {live.name}", net.destroy, net.create)
        journal.run(f"undefine network {live.name}", net.undefine, lambda: _restore_network(conn, live))
    return run


def _define_domain(name: str, xml: str, previous: Live | None,
                   start: bool) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        if previous is None:
            undo = lambda: conn.lookupByName(name).undefine()  # noqa: E731
        else:
            undo = lambda: conn.defineXML(previous.xml)  # noqa: E731
        journal.run(f"define domain {name}", lambda: conn.defineXML(xml), undo)
        if start:
            _start_domain(name)(conn, journal)
    return run


def _start_domain(name: str) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        journal.run(f"start domain {name}", lambda: conn.lookupByName(name).create(),
                    lambda: conn.lookupByName(name).destroy())
    return run


def _remove_domain(live: Live) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        dom = live.handle

        def restore() -> None:
            restored = conn.defineXML(live.xml)
            if live.autostart:
                restored.setAutostart(1)

        if live.active:
            journal.run(f"stop domain {live.name}", dom.destroy, lambda: conn.lookupByName(live.name).create())
        journal.run(f"undefine domain {live.name}", dom.undefine, restore)
    return run


def _describe_network(xml: str) -> str:
    facts = dx.network_facts(xml)
    mode = facts.forward_mode or "isolated"
    where = ", ".join(str(s) for s in facts.subnets) or "no address on the host"
    return f"{mode}, bridge {facts.bridge or '(libvirt picks)'}, {where}"


def _diff(old: str | None, new: str, name: str) -> str:
    return dx.unified_diff(old or "", new, f"{name} (as last deployed)", f"{name} (from the file)")


def _drift(live: Live, applied: str) -> list[str]:
    """What the host's network says differently from what topoc applied, in the facts
    that matter to the lab (bridge, forward mode, subnets): hand edits (virsh net-edit)
    that the record of the applied XML cannot see."""
    have, want = dx.network_facts(live.xml), dx.network_facts(applied)
    drift = []
    if want.bridge is not None and have.bridge != want.bridge:
        drift.append(f"bridge {have.bridge}, not {want.bridge}")
    if have.forward_mode != want.forward_mode:
        drift.append(f"forward mode {have.forward_mode or 'none'}, not {want.forward_mode or 'none'}")
    if set(have.subnets) != set(want.subnets):
        shown = ", ".join(map(str, have.subnets)) or "none"
        drift.append(f"subnets {shown}, not {', '.join(map(str, want.subnets)) or 'none'}")
    return drift


def _plan_network(plan: Plan, w: Wanted, live: Live | None, record: Record) -> bool:
    """Plan one network; True when it will (re)start with a new configuration, so the
    pre-flight must check its bridge and subnets against the host."""
    if live is None:
        xml = dx.with_uuid(w.xml, w.uuid)
        plan.actions.append(Action(Change(CREATE, NETWORK, w.name, _describe_network(w.xml)), 2,
                                   _define_network(xml)))
        return True
    applied = record.networks[w.name].xml
    xml = dx.with_uuid(w.xml, live.uuid)
    repairs = [why for cond, why in ((not live.active, "start it (it is not running)"),
                                     (not live.autostart, "turn autostart on")) if cond]
    drift = _drift(live, applied) if applied is not None else []
    if drift:
        why = f"changed outside topoc ({'; '.join(drift)}); restoring what the file says"
        plan.actions.append(Action(Change(RECREATE, NETWORK, w.name, why,
                                          dx.unified_diff(live.xml, w.xml, f"{w.name} (on the host)",
                                                          f"{w.name} (from the file)")),
                                   2, _recreate_network(live, xml)))
        return True
    if applied is not None and dx.same_config(applied, w.xml):
        if repairs:
            plan.actions.append(Action(Change(UPDATE, NETWORK, w.name, "; ".join(repairs)), 2,
                                       lambda conn, journal: _ensure_running(live, journal)))
        else:
            plan.in_sync.append(Change(NOTHING, NETWORK, w.name, "in sync"))
        return False
    edits = dx.dhcp_host_changes(applied, w.xml) if applied is not None else None
    if edits is not None:
        detail = "DHCP host entries, applied live: " + ", ".join(e.describe() for e in edits)
        plan.actions.append(Action(Change(UPDATE, NETWORK, w.name, "; ".join([detail, *repairs]),
                                          _diff(applied, w.xml, w.name)), 2, _update_network_live(live, edits)))
        return False
    plan.actions.append(Action(Change(RECREATE, NETWORK, w.name, _why_recreate(applied, w.xml, live),
                                      _diff(applied, w.xml, w.name)), 2, _recreate_network(live, xml)))
    return True


def _why_recreate(applied: str | None, xml: str, live: Live) -> str:
    if applied is None:
        why = "topoc has no record of the XML it applied (an interrupted deploy?)"
    else:
        parts = ", ".join(f"<{p}>" for p in dx.differing_parts(applied, xml))
        why = (f"{parts} changed; libvirt applies that only when the network starts "
               "(virNetworkUpdate changes DHCP hosts live, not this)")
    if live.active:
        why += "; it restarts, and running VMs on it lose their link until they reconnect"
    return why


def _plan_domain(plan: Plan, w: Wanted, live: Live | None, record: Record, start: bool) -> None:
    # Domains come after every network (order 3), so one may start right after it is
    # defined: the networks it plugs into are up by then.
    then_start = start and (live is None or not live.active)
    started = " and start it (--start-vms)" if then_start else ""
    if live is None:
        plan.actions.append(Action(Change(CREATE, DOMAIN, w.name, "define" + started), 3,
                                   _define_domain(w.name, dx.with_uuid(w.xml, w.uuid), None, then_start)))
        return
    applied = record.domains[w.name].xml
    if applied is not None and dx.same_config(applied, w.xml):
        if then_start:
            plan.actions.append(Action(Change(UPDATE, DOMAIN, w.name, "start it (--start-vms)"), 3,
                                       _start_domain(w.name)))
        else:
            plan.in_sync.append(Change(NOTHING, DOMAIN, w.name, "in sync"))
        return
    detail = "redefine" + ("; the running VM sees it at its next boot" if live.active else started)
    plan.actions.append(Action(Change(UPDATE, DOMAIN, w.name, detail, _diff(applied, w.xml, w.name)), 3,
                               _define_domain(w.name, dx.with_uuid(w.xml, live.uuid), live, then_start)))


def _refuse_foreign(plan: Plan, w: Wanted, target: Target, live: Live | None = None) -> None:
    what = "network" if w.kind == NETWORK else "domain"
    undo = "virsh net-undefine" if w.kind == NETWORK else "virsh undefine"
    if live is not None and live.lab not in (None, plan.lab):
        plan.conflicts.append(diagnostic(
            FOREIGN_OBJECT, w.span,
            f"{target.uri} already has a {what} named {w.name} that topoc lab {live.lab} owns; "
            "topoc will not take it from that lab",
            hint="rename this object (or the lab), or destroy the other lab first"))
        return
    plan.conflicts.append(diagnostic(
        FOREIGN_OBJECT, w.span,
        f"{target.uri} already has a {what} named {w.name} that this lab did not create; "
        "topoc will not overwrite it",
        hint=f"to make it this lab's, deploy with `--adopt`; or rename the lab; or if that {what} "
             f"is a stale leftover, remove it with `{undo} {w.name}`"))


# --- adoption: existing objects of the file's names become the lab's ----------------


def _plan_adopt_network(plan: Plan, w: Wanted, live: Live, source: str) -> bool:
    """Adopt a network: when it means what the file says, it only gains topoc's metadata
    (its definition is redefined with that one element added: nothing restarts); DHCP
    host entries that differ are changed live (virNetworkUpdate); anything else that
    differs takes a restart, as any change of <forward>, <bridge> or <ip> does. True when
    it will restart with a new configuration (the pre-flight checks it)."""
    have, want = dx.describe_network(live.xml), dx.describe_network(w.xml)
    repairs = [why for cond, why in ((not live.active, "start it"), (not live.autostart, "turn autostart on"))
               if cond]
    # A network that already names this lab (its record was lost) keeps its marker.
    marked = live.xml if live.lab == plan.lab else dx.with_lab_marker(live.xml, plan.lab, source)
    if have.meaning(with_hosts=False) == want.meaning(with_hosts=False):
        edits = dx.dhcp_host_edits(live.xml, w.xml) if have.meaning() != want.meaning() else []
        # The test driver shows a running network's running definition only: there the
        # new one (with the metadata) is seen after a restart, harmless on a host of no
        # real guests. libvirtd shows the persistent one, and nothing restarts.
        restart = live.active and live.lab != plan.lab and not _shows_inactive_config(live.handle)
        detail = "same meaning as the file: it gains topoc's metadata, " + (
            "restarted to show it (this driver shows only the running definition)" if restart
            else "nothing restarts")
        if edits:
            detail += "; DHCP host entries, applied live: " + ", ".join(e.describe() for e in edits)
        plan.actions.append(Action(Change(ADOPT, NETWORK, w.name, "; ".join([detail, *repairs])), 2,
                                   _adopt_network(live, marked, edits, restart)))
        return False
    why = ", ".join(have.differences(want))
    restarts = "; it restarts, and running VMs on it lose their link until they reconnect" if live.active else ""
    plan.actions.append(Action(Change(ADOPT, NETWORK, w.name,
                                      f"and recreate from the file ({why}){restarts}",
                                      dx.unified_diff(live.xml, w.xml, f"{w.name} (on the host)",
                                                      f"{w.name} (from the file)")),
                               2, _recreate_network(live, dx.with_uuid(w.xml, live.uuid))))
    return True


def _adopt_network(live: Live, marked: str, edits: list[dx.DhcpHostChange],
                   restart: bool) -> Callable[[Any, Journal], None]:
    def run(conn: Any, journal: Journal) -> None:
        net = live.handle
        if marked != live.xml:
            if restart:  # stopped first: that driver keeps no new definition of a running network
                journal.run(f"stop network {live.name}", net.destroy, net.create)
            journal.run(f"adopt network {live.name}: add topoc's metadata",
                        lambda: conn.networkDefineXML(marked), lambda: conn.networkDefineXML(live.xml))
            if restart:
                journal.run(f"start network {live.name}", net.create, net.destroy)
        _update_network_live(live, edits)(conn, journal)
    return run


def _plan_adopt_domain(plan: Plan, w: Wanted, live: Live, source: str, start: bool) -> None:
    """Adopt a domain: it gains topoc's metadata (virDomainSetMetadata, live and in its
    definition). When it means something else than the file (memory, vCPUs, disk, nics),
    its own definition is edited to the file's meaning first (facts.domain_with_meaning):
    machine type, firmware, graphics and every device the file does not describe stay
    as they are; a running VM sees the edit at its next boot."""
    have, want = dx.describe_domain(live.xml), dx.describe_domain(w.xml)
    then_start = start and not live.active
    started = " and starts" if then_start else ""
    if have.meaning() == want.meaning():
        plan.actions.append(Action(Change(ADOPT, DOMAIN, w.name,
                                          "same meaning as the file: it gains topoc's metadata" + started), 3,
                                   _adopt_domain(live, plan.lab, source, then_start, None)))
        return
    detail = (f"and edit its definition to the file's ({', '.join(have.differences(want))}); "
              "the rest of it stays")
    if live.active:
        detail += "; the running VM sees it at its next boot"
    edited = dx.domain_with_meaning(live.xml, w.xml)
    plan.actions.append(Action(Change(ADOPT, DOMAIN, w.name, detail + started,
                                      dx.unified_diff(live.xml, edited, f"{w.name} (on the host)",
                                                      f"{w.name} (edited to the file)")),
                               3, _adopt_domain(live, plan.lab, source, then_start, w.xml)))


def _adopt_domain(live: Live, lab: str, source: str, start: bool,
                  meaning_of: str | None) -> Callable[[Any, Journal], None]:
    """Edit the domain's definition to the meaning of `meaning_of` (None: leave it),
    then mark it the lab's."""
    from topoc.backends.libvirt import METADATA_NAMESPACE, METADATA_PREFIX

    def run(conn: Any, journal: Journal) -> None:
        lv = _libvirt()
        dom = live.handle
        if meaning_of is not None:
            # Read with secrets (VNC passwords...), so redefining keeps them.
            current = dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE | lv.VIR_DOMAIN_XML_SECURE)
            edited = dx.domain_with_meaning(current, meaning_of)
            journal.run(f"adopt domain {live.name}: edit its definition", lambda: conn.defineXML(edited),
                        lambda: conn.defineXML(current))
        # https://libvirt.org/html/libvirt-libvirt-domain.html#virDomainSetMetadata
        flags = lv.VIR_DOMAIN_AFFECT_CONFIG | (lv.VIR_DOMAIN_AFFECT_LIVE if live.active else 0)
        # The element without a namespace: libvirt puts it in METADATA_NAMESPACE under
        # the prefix given (a fragment declaring it itself is refused by libvirtd).
        element = dx.lab_element(lab, source, namespaced=False)
        journal.run(f"adopt domain {live.name}: add topoc's metadata",
                    lambda: dom.setMetadata(lv.VIR_DOMAIN_METADATA_ELEMENT, element, METADATA_PREFIX,
                                            METADATA_NAMESPACE, flags),
                    lambda: dom.setMetadata(lv.VIR_DOMAIN_METADATA_ELEMENT, None, METADATA_PREFIX,
                                            METADATA_NAMESPACE, flags))
        if start:
            _start_domain(live.name)(conn, journal)
    return run


def _preflight(plan: Plan, creating: list[Wanted], others: list[dx.NetworkFacts],
               interfaces: list[dx.InterfaceFacts], target: Target,
               host_links: set[str] | None = None) -> None:
    """Clashes of the networks about to start with what the host already has: libvirt
    itself would only find some of them at net-start, after other objects changed.
    `host_links`: every interface the host has (None: the driver cannot list them)."""
    for w in creating:
        facts = dx.network_facts(w.xml)
        # A bridged network's host bridge (w.uplink: its `bridged to` nic); not the bridge
        # of a network carried from another host, which topoc's own host steps make.
        if facts.uses_existing_bridge and facts.bridge and w.uplink is not None \
                and host_links is not None and facts.bridge not in host_links:
            plan.conflicts.append(_missing_bridge(w, facts.bridge, host_links, target))
        if facts.bridge and not facts.uses_existing_bridge:
            users = [f"libvirt network {o.name}" for o in others if o.bridge == facts.bridge]
            users += [f"host interface {i.name}" for i in interfaces if i.name == facts.bridge]
            for user in users:
                plan.conflicts.append(diagnostic(
                    HOST_BRIDGE_CLASH, w.bridge_span,
                    f"bridge {facts.bridge} of {w.name} is already used by {user} on {target.uri}",
                    hint="name another bridge with `bridge NAME`"))
        for subnet in facts.subnets:
            overlaps = _subnet_users(subnet, others, interfaces)
            for user, theirs in overlaps:
                span = w.address6_span if family_of(subnet) is IPV6 else None
                plan.conflicts.append(diagnostic(
                    HOST_SUBNET_CLASH, span or w.address_span,
                    f"subnet {subnet} of {w.name} overlaps {theirs} of {user} on {target.uri}",
                    hint="pick a subnet that no network on this host uses"))


def _missing_bridge(w: Wanted, bridge: str, host_links: set[str], target: Target) -> Diagnostic:
    """A <forward mode='bridge'/> network with a <bridge name=.../> "describes ... an
    existing host bridge that was configured outside of libvirt", and "libvirt doesn't
    attempt to manage the bridge interface at all" (https://libvirt.org/formatnetwork.html,
    forward mode `bridge`): it neither creates the bridge nor enslaves the nic, so
    without it the network starts with nothing behind it."""
    nic = w.uplink
    if nic is not None and nic in host_links:
        hint = (f"create bridge {bridge} on the host with {nic} as its port (netplan, "
                "NetworkManager, or this lab's host/up.sh from `topoc build`), then deploy again")
    else:
        shown = ", ".join(sorted(host_links)[:8]) or "none"
        hint = (f"the host has no {nic} either (its interfaces: {shown}); create bridge "
                f"{bridge} with the right nic as its port, and name that nic in `mode bridged to`")
    return diagnostic(HOST_BRIDGE_MISSING, w.bridge_span,
                      f"bridge {bridge} of bridged network {w.name} does not exist on {target.uri}: "
                      "libvirt attaches a bridged network to a host bridge, it does not create one",
                      hint=hint)


def _subnet_users(subnet: IPNetwork, others: list[dx.NetworkFacts],
                  interfaces: list[dx.InterfaceFacts]) -> list[tuple[str, IPNetwork]]:
    users = [(f"libvirt network {o.name}", s) for o in others for s in o.subnets if s.overlaps(subnet)]
    users += [(f"host interface {i.name}", s) for i in interfaces for s in i.subnets if s.overlaps(subnet)]
    return users


def make_plan(lab: Lab, target: Target, *, host: str | None = None, start_vms: bool = False,
              pool: str | None = None, adopt: bool = False) -> Plan:
    """What deploying the lab would change on the target, and what stands in the way.
    `pool`: an existing storage pool for the guests' volumes (default: the lab's own).
    With `adopt`, an existing object of a name the file gives that no topoc lab owns is
    taken into this lab instead of refused (see _plan_adopt_network/_plan_adopt_domain)."""
    from topoc.deploy import guests

    host = hypervisor(lab, host)
    with _libvirt_errors(target, "read the host's networks and domains"):
        record = target.records.load(lab.name)
        networks, domains = _live_networks(target.conn), _live_domains(target.conn)
        interfaces, note = _host_interfaces(target.conn)
        domain_type = guests.domain_type(target) if lab.vms else DEFAULT_DOMAIN_TYPE
    plan = Plan(lab.name, target.uri, host, record=record, notes=[note] if note else [])
    objects = wanted(lab, host, domain_type=domain_type, pool=pool)
    creating: list[Wanted] = []
    adopted: set[str] = set()  # networks
    for i, w in enumerate(objects):
        live = (networks if w.kind == NETWORK else domains).get(w.name)
        if live is not None and not _owns(record, live, lab.name) and adopt and live.lab in (None, lab.name):
            # The record keeps the host's UUID: the object stays the one it was.
            objects[i] = w = replace(w, uuid=live.uuid)
            if w.kind == NETWORK:
                adopted.add(w.name)
                if _plan_adopt_network(plan, w, live, lab.file):
                    creating.append(w)
            else:
                _plan_adopt_domain(plan, w, live, lab.file, start_vms)
        elif live is not None and not _owns(record, live, lab.name):
            _refuse_foreign(plan, w, target, live)
        elif w.kind == NETWORK:
            if _plan_network(plan, w, live, record):
                creating.append(w)
        else:
            _plan_domain(plan, w, live, record, start_vms)
    _plan_removals(plan, lab, record, networks, domains)
    owned_live = {n for n, live in networks.items() if _owns(record, live, lab.name)} | adopted
    others = [dx.network_facts(live.xml) for n, live in networks.items() if n not in owned_live]
    lab_bridges = {dx.network_facts(networks[n].xml).bridge for n in owned_live}
    _preflight(plan, creating, others, [i for i in interfaces if i.name not in lab_bridges], target,
               None if note else {i.name for i in interfaces})
    plan.final = _final_record(record, objects, _all_lab_names(lab))
    with _libvirt_errors(target, "read the host's storage"):
        made = guests.plan_guests(plan, lab, target, record, host, pool)
    # The same dicts: a pool's UUID, known once it is defined, lands in the final record.
    plan.final.pools, plan.final.volumes, plan.final.tables = made.pools, made.volumes, made.tables
    return plan


def _plan_removals(plan: Plan, lab: Lab, record: Record, networks: dict[str, Live],
                   domains: dict[str, Live]) -> None:
    keep = _all_lab_names(lab)
    for kind, live_objects, order, remove in ((DOMAIN, domains, 0, _remove_domain),
                                             (NETWORK, networks, 1, _remove_network)):
        for name in sorted(record.of_kind(kind)):
            live = live_objects.get(name)
            if name in keep or live is None or not _owns(record, live, lab.name):
                continue
            state = "running" if live.active else "defined"
            plan.actions.append(Action(Change(REMOVE, kind, name, f"no longer in the file ({state})"), order,
                                       remove(live)))


def _final_record(record: Record, objects: list[Wanted], keep: set[str]) -> Record:
    """The record once the plan has run: every wanted object with the XML applied; gone
    are the objects the file no longer has (removed, or vanished from the host)."""
    final = record.copy()
    for kind in (NETWORK, DOMAIN):
        owned = final.of_kind(kind)
        for name in [n for n in owned if n not in keep]:
            del owned[name]
    for w in objects:
        final.of_kind(w.kind)[w.name] = Owned(w.uuid, w.xml)
    return final


def _pending_record(record: Record, plan: Plan) -> Record:
    """Written before the first step: objects about to be created are recorded (with no
    XML yet) so that, were topoc killed half-way, the next run knows they are its own."""
    pending = record.copy()
    assert plan.final is not None
    for kind in (NETWORK, DOMAIN, "pool", "volume", "table"):
        for name, owned in plan.final.of_kind(kind).items():
            pending.of_kind(kind).setdefault(name, Owned(owned.uuid, None))
    return pending


# --- apply, status, destroy ------------------------------------------------------------


def apply(lab: Lab, target: Target, *, host: str | None = None, start_vms: bool = False,
          pool: str | None = None, adopt: bool = False) -> Plan:
    """Make the target hold the lab; raise Refused (nothing changed) or DeployError
    (after putting back everything this run changed)."""
    with _libvirt_errors(target, "lock the lab"), target.records.lock(lab.name):
        plan = make_plan(lab, target, host=host, start_vms=start_vms, pool=pool, adopt=adopt)
        if plan.conflicts:
            raise Refused(plan.conflicts)
        assert plan.record is not None and plan.final is not None
        if plan.actions:
            _run(target, plan.record, _pending_record(plan.record, plan), plan.final,
                 sorted(plan.actions, key=lambda a: a.order))
        elif plan.final.to_json() != plan.record.to_json():
            with _libvirt_errors(target, "write the ownership record"):
                target.records.save(plan.final)
        return plan


def _run(target: Target, before: Record, pending: Record, final: Record, actions: list[Action],
         journal: Journal | None = None) -> None:
    """Run the actions as one transaction: all of them, or none (rolled back). A caller
    that may have to undo them later (a later host of the lab failed: topoc.deploy.multi)
    passes its own journal, which holds the undo of every step once this returns."""
    try:
        target.records.save(pending)
    except RecordError as e:
        raise DeployError(f"{e}; nothing was changed") from None
    journal = journal if journal is not None else Journal()
    try:
        for action in actions:
            action.run(target.conn, journal)
        target.records.save(final)
    except BaseException as failure:
        problems = journal.rollback()
        try:
            target.records.save(before)
        except RecordError as e:
            problems.append(str(e))
        if isinstance(failure, StepFailed):
            what = explain(failure.error, target.uri, failure.step)
        elif isinstance(failure, (RecordError, HostCommandError)):
            what = str(failure)
        elif isinstance(failure, _libvirt().libvirtError):
            what = explain(failure, target.uri, "deploy")
        else:
            raise  # a bug or ^C: the host is put back all the same
        raise DeployError(_rollback_message(what, journal.steps, problems)) from None


# For topoc.deploy.multi, which runs one host's plan as a step of a deploy over several.
run_actions = _run
pending_record = _pending_record


def _rollback_message(what: str, steps: list[str], problems: list[str]) -> str:
    if not problems:
        undone = f"; the {len(steps)} step(s) before it were undone" if steps else ""
        return f"{what}\n  rolled back{undone}: the host is as it was before"
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{what}\n  rollback was incomplete; check these by hand:\n{lines}"


@dataclass(frozen=True)
class ObjectStatus:
    kind: str
    name: str
    defined: bool
    active: bool
    autostart: bool
    owned: bool
    bridge: str | None = None
    leases: tuple[str, ...] | None = None  # None: the driver does not report them
    note: str = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "defined": self.defined, "active": self.active,
                "autostart": self.autostart, "owned": self.owned, "bridge": self.bridge,
                "leases": list(self.leases) if self.leases is not None else None, "note": self.note}


def _leases(net: Any) -> tuple[str, ...] | None:
    lv = _libvirt()
    try:
        leases = net.DHCPLeases()
    except lv.libvirtError:
        return None  # e.g. the test driver: "this function is not supported"
    return tuple(sorted(f"{lease['mac']} {lease['ipaddr']}/{lease['prefix']}"
                        + (f" {lease['hostname']}" if lease.get("hostname") else "") for lease in leases))


def _object_status(w_kind: str, name: str, live: Live | None, owned: bool, note: str = "") -> ObjectStatus:
    if live is None:
        return ObjectStatus(w_kind, name, False, False, False, False, note=note or "not defined")
    bridge = leases = None
    if w_kind == NETWORK:
        bridge = dx.network_facts(live.xml).bridge
        leases = _leases(live.handle) if live.active else ()
    if not owned:
        note = note or "not this lab's (another object of that name)"
    return ObjectStatus(w_kind, name, True, live.active, live.autostart, owned, bridge, leases, note)


def status(lab: Lab, target: Target, *, host: str | None = None) -> list[ObjectStatus]:
    """Each of the lab's objects on the target, and owned leftovers the file dropped."""
    host = hypervisor(lab, host)
    with _libvirt_errors(target, "read the host's networks and domains"):
        record = target.records.load(lab.name)
        live = {NETWORK: _live_networks(target.conn), DOMAIN: _live_domains(target.conn)}
        result = []
        objects = wanted(lab, host)
        for w in objects:
            found = live[w.kind].get(w.name)
            owned = found is not None and _owns(record, found, lab.name)
            result.append(_object_status(w.kind, w.name, found, owned))
        listed = {(w.kind, w.name) for w in objects}
        for kind in (NETWORK, DOMAIN):
            for name in sorted(record.of_kind(kind)):
                found = live[kind].get(name)
                if (kind, name) not in listed and found is not None and _owns(record, found, lab.name):
                    note = ("on another host of the lab" if name in _all_lab_names(lab)
                            else "no longer in the file: the next deploy or destroy removes it")
                    result.append(_object_status(kind, name, found, True, note))
        from topoc.deploy import guests

        result += guests.status_rows(record, target)
    return result


def destroy(lab_name: str, target: Target, journal: Journal | None = None) -> tuple[list[Change], list[str]]:
    """Stop and undefine every object the lab owns on the target, and nothing else.
    Returns what was removed and what was left alone (with why). `journal`: as for _run."""
    with _libvirt_errors(target, "read the host's networks and domains"), target.records.lock(lab_name):
        record = target.records.load(lab_name)
        networks, domains = _live_networks(target.conn), _live_domains(target.conn)
        actions: list[Action] = []
        left_alone = []
        for kind, live_objects, order, remove in ((DOMAIN, domains, 0, _remove_domain),
                                                 (NETWORK, networks, 1, _remove_network)):
            for name in sorted(record.of_kind(kind)):
                live = live_objects.get(name)
                if live is None:
                    continue
                if not _owns(record, live, lab_name):
                    left_alone.append(f"{kind} {name}: not the one this lab created "
                              "(another UUID, or no topoc metadata for this lab)")
                    continue
                actions.append(Action(Change(REMOVE, kind, name, "running" if live.active else "defined"),
                                      order, remove(live)))
        from topoc.deploy import guests

        actions += guests.destroy_actions(record, target, left_alone)
        actions.sort(key=lambda a: a.order)
        if actions or not record.empty:
            _run(target, record, record, Record(lab_name, target.uri), actions, journal)
        return [a.change for a in actions], left_alone
