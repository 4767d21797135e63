"""A lab over several hypervisors: which connection each host is, and plan, deploy,
status and destroy over all of them in one command, all or nothing across hosts.

Each host of the lab has its own libvirt connection: `connect URI` in its `host`
block, overridden by `--connect HOST=URI` on the command line; a lone `--connect URI`
names the connection of a one-host lab (or of the host picked with `--host`). Every host
is planned before anything changes: a clash on any host refuses the whole deploy and no
host is touched. The hosts are then deployed all at once, one thread each, each as its
own transaction (topoc.deploy.engine); when one fails, it rolls itself back and the
hosts that succeeded are put back too, from the journals kept for that.

No libvirt import here: the engine opens the connections.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

from topoc.deploy import engine
from topoc.deploy.engine import DeployError, Journal, Plan, Refused, Target
from topoc.deploy.records import Record, RecordError
from topoc.deploy.transport import (
    HostCommandError,
    HostStep,
    Transport,
    run_steps,
    transport_for,
)
from topoc.diagnostics import diagnostic
from topoc.front.span import UNKNOWN
from topoc.model import naming
from topoc.model.ir import Lab
from topoc.model.uri import UriError, parse_uri

DEFAULT_URI = "test:///default"
T = TypeVar("T")
_HOST_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)=(.*)\Z", re.DOTALL)


class ConnectionChoiceError(DeployError):
    """The command line and the file do not say which connection each host is."""


def split_connect_option(value: str) -> tuple[str | None, str]:
    """`kvm1=qemu:///system` -> ("kvm1", URI); a bare URI -> (None, URI). A URI's own
    `=` (in ?keyfile=...) comes after `://`, so a name before the first `=` decides."""
    match = _HOST_ASSIGNMENT.match(value)
    if match and "://" not in match.group(1):
        return match.group(1), match.group(2)
    return None, value


def _checked(uri: str, where: str) -> str:
    try:
        parsed = parse_uri(uri)
    except UriError as e:
        raise ConnectionChoiceError(f"{where}: {e.message}\n  {e.hint}") from None
    if parsed.unknown_params:
        # libvirt would ignore them silently; on the command line that is a typo.
        raise ConnectionChoiceError(f"{where}: libvirt does not know the URI parameter(s) "
                                    f"{', '.join(parsed.unknown_params)} in {uri}")
    return uri


def lab_hosts(lab: Lab) -> list[str]:
    """The hosts that carry something of the lab (networks or VMs), in file order."""
    used = {n.host for n in lab.networks if n.managed and n.host} | {v.host for v in lab.vms}
    return [h.name for h in lab.hosts if h.name in used]


def resolve_connections(lab: Lab, options: Sequence[str], host: str | None = None,
                        default: str = DEFAULT_URI) -> dict[str, str]:
    """Host name -> libvirt URI for the hosts this command acts on, in file order.

    `options` are the `--connect` values as given. A host with no URI from the command
    line or its `connect` line gets `default` only in a one-host lab (or with --host):
    two hosts cannot share one default connection, they would collide on it."""
    names = [h.name for h in lab.hosts]
    from_file = {h.name: h.connect for h in lab.hosts if h.connect}
    named: dict[str, str] = {}
    bare: list[str] = []
    for value in options:
        name, uri = split_connect_option(value)
        if name is None:
            bare.append(_checked(uri, "--connect"))
            continue
        if name not in names:
            raise ConnectionChoiceError(f"--connect {value}: lab {lab.name} has no host {name!r} "
                                        f"(its hosts: {', '.join(names) or 'none'})")
        if name in named:
            raise ConnectionChoiceError(f"--connect gives host {name} twice")
        named[name] = _checked(uri, f"--connect {name}=")
    if len(bare) > 1:
        raise ConnectionChoiceError("--connect URI without a host name may be given once; "
                                    "name each host's connection with --connect HOST=URI")
    if host is not None:
        if host not in names:
            raise ConnectionChoiceError(f"lab {lab.name} has no host {host!r} "
                                        f"(its hosts: {', '.join(names) or 'none'})")
        chosen = [host]
    else:
        chosen = lab_hosts(lab) or names[:1]
    if bare:
        if len(chosen) > 1:
            raise ConnectionChoiceError(
                f"lab {lab.name} has {len(chosen)} hosts ({', '.join(chosen)}): say which "
                f"connection each is with --connect HOST=URI (or `connect URI` in its host "
                f"block), or pick one with --host")
        if not chosen:
            return {}
        if named.get(chosen[0], bare[0]) != bare[0]:
            raise ConnectionChoiceError(f"--connect gives host {chosen[0]} two connections")
        named[chosen[0]] = bare[0]
    result: dict[str, str] = {}
    missing: list[str] = []
    for name in chosen:
        found = named.get(name) or from_file.get(name)
        if found is None and len(chosen) == 1:
            found = default
        if found is None:
            missing.append(name)
        else:
            result[name] = found
    if missing:
        raise ConnectionChoiceError(
            f"no connection for host{'s' if len(missing) > 1 else ''} {', '.join(missing)} of lab "
            f"{lab.name}: add `connect URI` to its host block, or give --connect "
            f"{missing[0]}=URI (e.g. qemu+ssh://root@{missing[0]}/system); or act on one "
            "host with --host NAME")
    shared: dict[str, str] = {}
    for name, uri in result.items():
        if uri in shared and len(result) > 1:
            raise ConnectionChoiceError(
                f"hosts {shared[uri]} and {name} both connect to {uri}: one libvirtd cannot be "
                "two hosts of a lab (their networks would collide on it)")
        shared[uri] = name
    return result


def bare_uri(options: Sequence[str], default: str = DEFAULT_URI) -> str:
    """The lone `--connect URI`, for a lab without hosts; else the default."""
    bare = [uri for name, uri in map(split_connect_option, options) if name is None]
    return _checked(bare[0], "--connect") if bare else default


# --- acting on every host -------------------------------------------------------------


@dataclass
class HostTarget:
    host: str
    target: Target


def connect_all(connections: dict[str, str]) -> list[HostTarget]:
    """One connection per host, in the order given; a host that cannot be reached stops
    the command before anything changed (its name in the message)."""
    opened = []
    for host, uri in connections.items():
        try:
            opened.append(HostTarget(host, engine.connect(uri)))
        except DeployError as e:
            raise DeployError(f"host {host}: {e}") from None
    return opened


def _on_each_host(targets: Sequence[HostTarget], work: Callable[[HostTarget], T]
                  ) -> tuple[list[tuple[T | None, BaseException | None]], BaseException | None]:
    """`work` for every host at once, one thread each (each host has its own connection,
    and libvirt-python lets go of the GIL while libvirt works): (result, None) or
    (None, what it raised) per host, in the hosts' order, and the interruption (^C,
    SIGTERM) that reached this thread meanwhile, if any. Every host's work has ended
    when it returns, also after an interruption, so the caller can put hosts back."""
    interruption: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(len(targets), 1)) as pool:
        futures = [pool.submit(work, t) for t in targets]
        while True:
            try:
                wait(futures)
                break
            except KeyboardInterrupt as e:  # ^C: let every host finish first, then say so
                interruption = interruption or e
    outcomes: list[tuple[T | None, BaseException | None]] = []
    for future in futures:
        error = future.exception()
        outcomes.append((None, error) if error is not None else (future.result(), None))
    return outcomes, interruption


def plan_all(lab: Lab, targets: Sequence[HostTarget], *, start_vms: bool = False) -> list[Plan]:
    """One plan per host, each against its own connection (all hosts at once), with the
    host-level steps libvirt cannot do (last: the links join bridges the networks' start
    makes)."""
    def plan_one(t: HostTarget) -> Plan:
        plan = engine.make_plan(lab, t.target, host=t.host, start_vms=start_vms)
        _plan_host_steps(plan, lab, spanning_steps(lab, t.host), t)
        return plan

    plans = []
    outcomes, interruption = _on_each_host(targets, plan_one)
    if interruption is not None:
        raise interruption
    for t, (plan, error) in zip(targets, outcomes, strict=True):
        if isinstance(error, (DeployError, HostCommandError)):
            raise DeployError(f"host {t.host}: {error}") from None
        if error is not None:
            raise error
        assert plan is not None
        plans.append(plan)
    return plans


# --- host-level steps: the VXLAN links of networks on several hosts --------------------

HOST_LINK = "host link"


def spanning_steps(lab: Lab, host: str) -> list[tuple[str, HostStep]]:
    """What libvirt cannot do for the networks on several hosts this host is on: on the
    hosts after the first, the network's bridge (libvirt's bridge mode needs one); on
    every host, the VXLAN link (UDP 4789, unicast to each other host, one all-zero
    forwarding entry each) as a port of the bridge. The same links as up.sh makes on the
    shell path (topoc.backends.host plans both). Each with the network it serves."""
    from topoc.backends.host import host_plan

    node = next((h for h in lab.hosts if h.name == host), None)
    if node is None:
        return []
    plan = host_plan(lab, node)
    carried = {n.name for n in lab.networks_carried_by(host)}
    steps = []
    for v in plan.vxlans:
        mtu = ["mtu", str(v.mtu)] if v.mtu else []
        if v.network in carried:
            steps.append((v.network, HostStep(
                f"bridge {v.bridge} of {v.network}",
                ("sh", "-c", shlex.join(["ip", "link", "add", "name", v.bridge, *mtu, "type", "bridge"])
                 + " && " + shlex.join(["ip", "link", "set", "dev", v.bridge, "up"])),
                ("ip", "link", "del", "dev", v.bridge), ("ip", "link", "show", "dev", v.bridge))))
        add = shlex.join(["ip", "link", "add", "name", v.name, *mtu, "type", "vxlan", "id", str(v.vni),
                          "dstport", "4789", "local", v.local, "nolearning"])
        has_fdb = [f"bridge fdb show dev {shlex.quote(v.name)} | grep -F {shlex.quote(f' dst {r} ')} >/dev/null"
                   for r in v.remotes]
        # Idempotent, and it repairs: a network restarted by libvirt comes back with a new
        # bridge, and the link that outlived the old one is attached again.
        do = [f"ip link show dev {shlex.quote(v.name)} >/dev/null 2>&1 || {add}",
              shlex.join(["ip", "link", "set", "dev", v.name, "master", v.bridge]),
              shlex.join(["ip", "link", "set", "dev", v.name, "up"])]
        do += [f"{check} || " + shlex.join(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev",
                                            v.name, "dst", r])
               for check, r in zip(has_fdb, v.remotes, strict=True)]
        attached = (f"ip -o link show dev {shlex.quote(v.name)} | grep -F {shlex.quote(f' master {v.bridge} ')} "
                    "| grep -E '<([^>]*,)?UP[,>]' >/dev/null")
        done = [attached, *has_fdb]
        steps.append((v.network, HostStep(
            f"vxlan {v.name} (id {v.vni}) of {v.network} to {', '.join(v.remotes)}",
            ("sh", "-c", " && ".join(do)), ("ip", "link", "del", "dev", v.name),
            ("sh", "-c", " && ".join(done)))))
    return steps


def _host_transport(t: HostTarget) -> Transport | None:
    """The transport of the host's connection; None for libvirt's test driver, whose
    host is a fiction in this process: host steps there would change this machine."""
    if t.target.private:
        return None
    return transport_for(t.target.uri)


def _plan_host_steps(plan: Plan, lab: Lab, steps: list[tuple[str, HostStep]], t: HostTarget) -> None:
    """The host steps that are needed, as actions of the host's plan (order 4: after
    the networks have started, so the first host's bridge exists). A link or bridge
    of that name which is there already belongs to this lab only when the lab owns the
    network on this host (its record); else it is someone else's, and refused."""
    if not steps:
        return
    transport = _host_transport(t)
    if transport is None:
        plan.notes.append(f"note: {len(steps)} host-level step(s) for networks on several hosts "
                          f"are not run on the test driver ({', '.join(s.what for _, s in steps)})")
        return
    owned = set(plan.record.networks) if plan.record is not None else set()
    for network, step in steps:
        assert step.undo is not None
        link = step.undo[-1]  # every host step makes one link: `ip link del dev LINK` undoes it
        there = transport.run(("ip", "link", "show", "dev", link), check=False).returncode == 0
        if there and _network_name(lab, network) not in owned:
            net = lab.network(network)
            assert net is not None
            plan.conflicts.append(diagnostic(
                engine.HOST_BRIDGE_CLASH, net.bridge_span if net.bridge_span != UNKNOWN else net.span,
                f"{t.host} already has an interface {link}, which this lab did not make, for "
                f"{step.what}", "remove it on that host, or give the network another `bridge` or `vni`"))
            continue
        if not step.needed(transport):
            plan.in_sync.append(engine.Change(engine.NOTHING, HOST_LINK, step.what, "in place"))
            continue

        def run(conn: object, journal: Journal, step: HostStep = step) -> None:
            run_steps([step], transport, journal.run)

        plan.actions.append(engine.Action(
            engine.Change(engine.CREATE, HOST_LINK, step.what, f"on {transport.description}"), 4, run))


def _network_name(lab: Lab, network: str) -> str:
    """The libvirt name of one of the lab's networks (its exact `name`, or the lab's prefix)."""
    net = lab.network(network)
    return naming.libvirt_name(lab.name, network, net.exact_name if net is not None else None)


def _remove_host_steps(lab: Lab, t: HostTarget, journal: Journal) -> list[str]:
    """destroy: take the host-level links away (newest first), each undoable; only those
    of networks the lab owns on this host (its record), never a look-alike."""
    transport = _host_transport(t)
    if transport is None:
        return []
    owned = set(t.target.records.load(lab.name).networks)
    removals = [HostStep(f"remove {s.what}", s.undo, s.do, done=None)
                for network, s in reversed(spanning_steps(lab, t.host))
                if _network_name(lab, network) in owned
                and s.undo is not None and s.done is not None
                and transport.run(s.done, check=False).returncode == 0]
    return run_steps(removals, transport, journal.run)


@dataclass
class _Done:
    """A host deployed in this run, with what it takes to put it back."""

    host: str
    target: Target
    before: Record
    journal: Journal = field(default_factory=Journal)


def _put_back(done: list[_Done]) -> list[str]:
    """Undo the hosts deployed in this run, newest first; what could not be undone."""
    problems = []
    for d in reversed(done):
        problems += [f"host {d.host}: {p}" for p in d.journal.rollback()]
        try:
            d.target.records.save(d.before)
        except RecordError as e:  # say so and go on with the other hosts
            problems.append(f"host {d.host}: {e}")
    return problems


@contextlib.contextmanager
def _locked(lab: Lab, targets: Sequence[HostTarget]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for t in targets:
            try:
                stack.enter_context(t.target.records.lock(lab.name))
            except RecordError as e:  # e.g. another topoc holds the lab
                raise DeployError(f"host {t.host}: {e}") from None
        yield


def apply_all(lab: Lab, targets: Sequence[HostTarget], *, start_vms: bool = False) -> list[Plan]:
    """Deploy the lab on every host, all or nothing: Refused (nothing changed on any
    host) when any host clashes; DeployError after putting every host back when a step
    fails on any of them."""
    with _locked(lab, targets):
        plans = plan_all(lab, targets, start_vms=start_vms)
        conflicts = [d for plan in plans for d in plan.conflicts]
        if conflicts:
            raise Refused(conflicts)
        by_host = {t.host: plan for t, plan in zip(targets, plans, strict=True)}

        def deploy_one(t: HostTarget) -> _Done:
            plan = by_host[t.host]
            assert plan.record is not None and plan.final is not None
            step = _Done(t.host, t.target, plan.record)
            if plan.actions:
                # A failure here rolls this host back itself (engine._run).
                engine.run_actions(t.target, plan.record, engine.pending_record(plan.record, plan),
                                   plan.final, sorted(plan.actions, key=lambda a: a.order),
                                   step.journal)
            elif plan.final.to_json() != plan.record.to_json():
                t.target.records.save(plan.final)
            return step

        outcomes, interruption = _on_each_host(targets, deploy_one)
        done = [step for step, error in outcomes if step is not None]
        failed = [(t.host, error) for t, (_, error) in zip(targets, outcomes, strict=True) if error is not None]
        if interruption is not None:
            _put_back(done)
            raise interruption  # every host was put back all the same
        if failed:
            problems = _put_back(done)
            interrupted = next((e for _, e in failed if not isinstance(e, Exception)), None)
            if interrupted is not None:
                raise interrupted  # ^C: every host was put back all the same
            host, failure = failed[0]
            message = _message(host, failure, done, problems)
            message += "".join(f"\nhost {h}: {e}" for h, e in failed[1:])
            raise DeployError(message) from None
        return plans


def _message(host: str, failure: BaseException, done: list[_Done], problems: list[str]) -> str:
    text = f"host {host}: {failure}"
    if not done:
        return text
    hosts = ", ".join(d.host for d in done)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        return f"{text}\n  putting back {hosts} was incomplete; check these by hand:\n{lines}"
    return f"{text}\n  {hosts}, deployed in this run, were put back as they were"


def status_all(lab: Lab, targets: Sequence[HostTarget]) -> list[tuple[HostTarget, list[engine.ObjectStatus]]]:
    """Each host's objects, then its host-level links (whether each is there)."""
    result = []
    for t in targets:
        try:
            rows = engine.status(lab, t.target, host=t.host) + _host_link_status(lab, t)
        except (DeployError, HostCommandError) as e:
            raise DeployError(f"host {t.host}: {e}") from None
        result.append((t, rows))
    return result


def _host_link_status(lab: Lab, t: HostTarget) -> list[engine.ObjectStatus]:
    steps = spanning_steps(lab, t.host)
    transport = _host_transport(t)
    rows = []
    for _, step in steps:
        if transport is None:
            rows.append(engine.ObjectStatus(HOST_LINK, step.what, False, False, False, False,
                                            note="not made on the test driver"))
            continue
        there = not step.needed(transport)
        rows.append(engine.ObjectStatus(HOST_LINK, step.what, there, there, False, there,
                                        note="" if there else "missing: deploy makes it"))
    return rows


def destroy_all(lab: Lab, targets: Sequence[HostTarget]
                ) -> list[tuple[HostTarget, list[engine.Change], list[str]]]:
    """Destroy the lab on every host, all or nothing: when one host fails, the hosts
    destroyed before it in this run get their objects back. The VXLAN links (and the
    bridges topoc made) go first, then the libvirt objects."""
    result = []
    done: list[_Done] = []
    lab_name = lab.name
    for t in targets:
        step = _Done(t.host, t.target, Record(lab_name, t.target.uri))
        try:
            step.before = t.target.records.load(lab_name)
            links = _remove_host_steps(lab, t, step.journal)
            removed, left_alone = engine.destroy(lab_name, t.target, journal=step.journal)
            removed = [engine.Change(engine.REMOVE, HOST_LINK, what.removeprefix("remove "), "deleted")
                       for what in links] + removed
        except BaseException as failure:
            problems = _put_back(done)
            if not isinstance(failure, Exception):
                raise
            raise DeployError(_message(t.host, failure, done, problems)) from None
        done.append(step)
        result.append((t, removed, left_alone))
    return result
