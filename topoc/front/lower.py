"""Lowering: the syntax tree -> the typed IR, with every value checked on the way.

This is where text becomes facts: each statement has one function below (registered
for its keyword with `@statement`) that turns its values into a draft of its block,
with the value parsers of topoc.front.values; then names are resolved (they may be used
before they are defined), a nic address without a prefix takes its network's, MACs
that were left out are derived (topoc.model.naming) and everything else that was left
out gets its documented default. Each value that cannot become a fact is an
`invalid-value`, `undefined-name`, `duplicate-name`, `duplicate-statement` or
`missing-statement` diagnostic pointing at the exact token.

Lowering keeps going: a bad value, an unknown name or a duplicate leaves the rest of
the lab intact. A value that only the entity itself uses (a bridge name, the memory
size) is left at its default; an entity that cannot be modelled without the value (a
network without a usable mode or address, a nic on a network that does not exist) is
left out, or kept without the part. Either way its name goes into `poisoned`, and the
checks stay silent about it: what they would say could only follow from the error
already reported. A statement the parser had to skip (a syntax error) poisons its
block the same way, and a name a skipped header declared is never called undefined.

Semantic checks on the finished model (conflicts, reachability) are not here: they
live in topoc.checks.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import NamedTuple, TypeVar

from topoc.codes import CONFLICTING_STATEMENTS, UNKNOWN_URI_PARAMETER
from topoc.diagnostics import (
    DUPLICATE_NAME,
    DUPLICATE_STATEMENT,
    INVALID_VALUE,
    MISSING_STATEMENT,
    UNDEFINED_NAME,
    Code,
    Diagnostic,
    Severity,
    diagnostic,
)
from topoc.front import values as v
from topoc.front.span import UNKNOWN, Span
from topoc.front.statements import NIC_OPTIONS_PER_FAMILY, PER_FAMILY, SINGLE, STATEMENTS
from topoc.front.syntax import Block, Statement, SyntaxTree, Token
from topoc.front.values import Invalid
from topoc.model import naming
from topoc.model.family import (
    FAMILIES,
    IPV4,
    IPV6,
    Family,
    IPAddress,
    IPInterface,
    IPNetwork,
    family_of,
    family_of_text,
    parse_address,
)
from topoc.model.ir import DhcpRange, Expect, External, Forward, Host, Lab, Mode, Network, Nic, Route, Vm
from topoc.model.platform import DEFAULT_PROFILE

T = TypeVar("T")

_A_KIND = {"host": "a host", "vm": "a VM", "external": "an external"}

DEFAULT_MEMORY = 512 * 1024**2

# A network on several hosts without `mtu`: 1500 less the 50 bytes of VXLAN over IPv4
# (https://docs.kernel.org/networking/vxlan.html; RFC 7348 section 4.3).
VXLAN_DEFAULT_MTU = 1450


class Lowered(NamedTuple):
    """The lab (every entity that could be lowered), the diagnostics, and the names of
    the networks and nodes left out or lowered incomplete (see the module docstring)."""

    lab: Lab
    diagnostics: list[Diagnostic]
    poisoned: frozenset[str]


def _name_hint(word: str, choices: Iterable[str], what: str, otherwise: str) -> str:
    """"did you mean" for a near miss; else the names there are (a few), and how to add one."""
    names = sorted(choices)
    near = v.suggest(word, names)
    if near:
        return near
    if not names:
        return otherwise
    shown = ", ".join(f"`{n}`" for n in names[:6]) + (", ..." if len(names) > 6 else "")
    return f"the {what} are {shown}; or {otherwise}"


# --- drafts: what a block's statements said, before names are resolved ------------------


@dataclass
class NetworkDraft:
    block: Block
    name: str
    one: dict[str, Statement] = field(default_factory=dict)  # each single statement, as written
    failed: set[str] = field(default_factory=set)  # statements whose value did not lower
    mode: Mode | None = None
    via: str | None = None
    bridge: str | None = None
    address: IPv4Interface | None = None
    subnet: IPv4Network | None = None
    dhcp: DhcpRange | None = None
    address6: IPv6Interface | None = None
    subnet6: IPv6Network | None = None
    dhcp6: DhcpRange | None = None
    nat6: bool = False
    dns: bool = False
    domain: str | None = None
    mtu: int | None = None
    stp: bool = False
    masquerade: bool = False
    vni: int | None = None
    exact_name: str | None = None
    hosts: tuple[Token, ...] = ()  # `on H1, H2, ...`: the first holds the gateway


@dataclass
class NicDraft:
    """A nic whose network (and so its address's prefix) may be defined later in the file."""

    owner: str
    index: int
    stmt: Statement
    iface: str | None
    network: Token
    address: Token | None
    written: IPAddress | IPInterface | None  # the IPv4 address as written (its prefix may be left out)
    mac: str | None
    model: str | None
    gateway: IPAddress | None
    options: dict[str, Token] = field(default_factory=dict)  # for the values' spans
    # The IPv6 `address` / `gateway`, when given too (the options' keys: address6, gateway6).
    address6: Token | None = None
    written6: IPAddress | IPInterface | None = None
    gateway6: IPAddress | None = None


@dataclass
class NodeDraft:
    kind: str  # "host", "vm" or "external"
    block: Block
    name: str
    nics: list[NicDraft | None] = field(default_factory=list)  # None: failed (indexes stay)
    routes: list[Route] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    memory: int = DEFAULT_MEMORY
    vcpus: int = 1
    disk: str | None = None
    # The guest's boot and login (vm blocks): see topoc.model.ir.Vm.
    image: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    user: str | None = None
    ssh_keys: list[str] = field(default_factory=list)
    boot_spans: dict[str, Span] = field(default_factory=dict)  # image/kernel/initrd/cmdline/disk
    exact_name: str | None = None
    connect: str | None = None
    incomplete: bool = False  # a nic, route or gateway was left out
    unplaced: bool = False  # a VM whose `on` names no single host (reported)


Draft = NetworkDraft | NodeDraft
StatementFn = Callable[["_Lowerer", Draft, Statement], None]

# keyword -> the function that lowers it into its block's draft (filled by @statement).
_STATEMENT_FNS: dict[str, StatementFn] = {}


def statement(keyword: str) -> Callable[[Callable], Callable]:
    """Register the function that lowers the block statement `keyword` (see
    topoc.front.statements for its shape). It raises Invalid for a bad value."""
    assert keyword in STATEMENTS, keyword

    def register(fn: Callable) -> Callable:
        _STATEMENT_FNS[keyword] = fn
        return fn

    return register


# --- network statements ---------------------------------------------------------------


@statement("mode")
def _mode(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    link, target = next(iter(stmt.options()), (None, None))
    d.mode, d.via = v.mode(stmt.value, link, target, stmt.span)


@statement("bridge")
def _bridge(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    d.bridge = v.ifname(stmt.value, "bridge")


@statement("address")
def _network_address(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    address = v.interface(stmt.value)
    if isinstance(address, IPv4Interface):
        d.address = address
    else:
        d.address6 = address


@statement("subnet")
def _subnet(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    subnet = v.network_cidr(stmt.value)
    if isinstance(subnet, IPv4Network):
        d.subnet = subnet
    else:
        d.subnet6 = subnet


@statement("dhcp")
def _dhcp(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    dhcp = v.dhcp_range(stmt.values, stmt.span)
    if dhcp.family is IPV4:
        d.dhcp = dhcp
    else:
        d.dhcp6 = dhcp


@statement("nat6")
def _nat6(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    d.nat6 = v.switch(stmt.value, "nat6")


@statement("dns")
def _dns(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    d.dns = v.switch(stmt.value, "dns")


@statement("domain")
def _domain(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    d.domain = v.domain(stmt.value)


@statement("mtu")
def _mtu(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    d.mtu = v.integer(stmt.value, "MTU", 68, 65535)


@statement("stp")
def _stp(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    d.stp = v.switch(stmt.value, "stp")


@statement("masquerade")
def _masquerade(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    # `masquerade` alone means on: the walk-through's `iptables -t nat -A POSTROUTING -s
    # SUBNET -j MASQUERADE` (network_from checks that the mode is routed or open).
    d.masquerade = v.switch(stmt.value, "masquerade") if len(stmt.tokens) > 1 else True


@statement("vni")
def _vni(lw: _Lowerer, d: NetworkDraft, stmt: Statement) -> None:
    d.vni = v.integer(stmt.value, "VXLAN network identifier", 1, naming.VNI_MAX)


@statement("name")
def _exact_name(lw: _Lowerer, d: Draft, stmt: Statement) -> None:
    d.exact_name = v.exact_name(stmt.value)


# Values only the network itself uses: when one is bad, the network is kept without it.
# Without any other (mode, address, subnet, dhcp, name) it cannot be modelled: it is left out.
_NETWORK_LEAF_VALUES = frozenset(("bridge", "dns", "domain", "mtu", "stp", "masquerade", "nat6", "vni"))


def _both(keyword: str) -> tuple[str, str]:
    """A per-family statement's keys among a block's single statements: its IPv4 and
    its IPv6 one (see _Lowerer.statements)."""
    return keyword, f"{keyword}6"


# --- node statements (host, vm, external) ---------------------------------------------


@statement("nic")
def _nic(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    index = len(d.nics)
    d.nics.append(None)  # until it lowers; keeps the indexes of the nics after it stable
    iface = v.ifname(stmt.value) if stmt.value.is_value else None
    (_, network), *rest = stmt.options()  # `on NETWORK` comes first
    options: dict[str, Token] = {}
    duplicated = False
    for keyword, value in rest:
        # `address` and `gateway` once per family: the IPv6 one is kept as address6/gateway6.
        key = keyword.text
        if key in NIC_OPTIONS_PER_FAMILY and family_of_text(value.text) is IPV6:
            key += "6"
        if key in options:
            if keyword.text in NIC_OPTIONS_PER_FAMILY:
                lw.say(DUPLICATE_STATEMENT, "family_on_nic", keyword.span, keyword=keyword.text,
                       family=family_of_text(value.text).title)
            else:
                lw.say(DUPLICATE_STATEMENT, "on_nic", keyword.span, keyword=keyword.text)
            duplicated = True
        options[key] = value
    # A bad MAC or model is left out (a MAC is then derived, the model is virtio); a bad
    # gateway leaves the node's routing incomplete.
    mac = lw.attempt(lambda: v.mac(options["mac"])) if "mac" in options else None
    model = lw.attempt(lambda: v.model(options["model"])) if "model" in options else None
    gateways = {}
    for key in ("gateway", "gateway6"):
        if key in options:
            gateways[key] = lw.attempt(partial(v.address, options[key]))
            if gateways[key] is None:
                d.incomplete = True
    # The addresses' form is checked here; their prefix may come from the network, later.
    written: dict[str, IPAddress | IPInterface | None] = {}
    for key in ("address", "address6"):
        if key in options:
            written[key] = lw.attempt(partial(v.nic_address_form, options[key]))
            if written[key] is None:
                # Reported: the nic stays, without its address (not "missing" one).
                d.incomplete = True
                lw.poisoned.add(network.text)  # its members are not all known
    if duplicated:
        raise _Reported()
    d.nics[index] = NicDraft(d.name, index, stmt, iface, network, options.get("address"), written.get("address"),
                             mac, model, gateways.get("gateway"), options, options.get("address6"),
                             written.get("address6"), gateways.get("gateway6"))


@statement("route")
def _route(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    via = stmt.after("via")
    assert via is not None  # the grammar requires it
    gateway = v.address(via)
    destination = v.destination(stmt.value, gateway)
    if destination.version != gateway.version:
        raise Invalid.of(stmt.span, "route_families", destination=destination, via=gateway,
                         family=family_of(destination).title)
    d.routes.append(Route(destination, gateway, stmt.span))


@statement("memory")
def _memory(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    d.memory = v.size(stmt.value)


@statement("vcpus")
def _vcpus(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    d.vcpus = v.integer(stmt.value, "vCPU count", 1, 4096)


@statement("disk")
def _disk(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    path = v.string(stmt.value)
    if not path:
        raise Invalid.of(stmt.value.span, "empty_disk", vm=d.name)
    if any(ord(c) < 32 and c != "\t" for c in path):
        # XML 1.0 cannot hold control characters other than tab, CR and LF (and a
        # quoted string has no line breaks), so libvirt could never store the path.
        raise Invalid.of(stmt.value.span, "disk_control")
    if re.match(r"~[A-Za-z0-9_.-]*(/|$)", path):
        # Not an error: `~` may be a folder's real name. But it is not expanded: the
        # path is relative, taken from the .topo file's folder (topoc.backends.libvirt).
        lw.report(INVALID_VALUE, stmt.value.span, INVALID_VALUE.message("disk_tilde", path=path),
                  INVALID_VALUE.hint("disk_tilde"), Severity.WARNING)
    d.disk = path
    d.boot_spans["disk"] = stmt.span


# --- the guest's boot and login (vm blocks) -------------------------------------------

# A login name as useradd(8) takes it by default (Debian's NAME_REGEX): a lower-case
# letter or `_`, then lower-case letters, digits, `_` and `-`, at most 32 characters.
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# The public key types OpenSSH accepts in authorized_keys (sshd(8), "AUTHORIZED_KEYS
# FILE FORMAT": https://man.openbsd.org/sshd.8#AUTHORIZED_KEYS_FILE_FORMAT).
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                 "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss")
_BOOT_EXAMPLES = {"image": "/var/lib/libvirt/images/debian-12.qcow2",
                  "kernel": "/var/lib/libvirt/boot/vmlinuz", "initrd": "/var/lib/libvirt/boot/initrd.img"}


def _absolute_path(tok: Token, what: str) -> str:
    """A hypervisor path (image, kernel, initrd): absolute, and text XML can hold."""
    example = f"{what} {_BOOT_EXAMPLES[what]}"
    path = v.string(tok)
    if not path:
        raise Invalid(tok.span, f"the {what} path is empty", f"write its path, e.g. `{example}`")
    if any(ord(c) < 32 and c != "\t" for c in path):
        # XML 1.0 cannot hold control characters other than tab, CR and LF.
        raise Invalid(tok.span, f"the {what} path contains a control character", "remove it from the path")
    if not path.startswith("/"):
        # libvirt resolves nothing against the .topo file: a backing store or a kernel
        # is opened by the hypervisor by its absolute path.
        raise Invalid(tok.span, f"the {what} path `{path}` is not absolute",
                      f"write its absolute path on the hypervisor, e.g. `{example}`")
    return path


def _ssh_key(text: str, span: Span) -> str:
    """One authorized_keys line: TYPE BASE64 [COMMENT], no options. The key blob is
    checked as RFC 4253 section 6.6 frames it: a length-prefixed string naming the type."""
    fields = text.strip().split(None, 2)
    example = 'ssh-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... you@host"'
    if len(fields) < 2 or fields[0] not in SSH_KEY_TYPES:
        raise Invalid(span, "not an SSH public key (TYPE BASE64 [COMMENT])",
                      f"paste the line of your .pub file, e.g. `{example}`; key types: "
                      + ", ".join(SSH_KEY_TYPES[:3]) + ", ...")
    try:
        blob = base64.b64decode(fields[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        named = blob[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise Invalid(span, f"the {fields[0]} key's base64 part is damaged",
                      "copy the whole line of the .pub file again") from None
    if named != fields[0]:
        raise Invalid(span, f"the key says `{fields[0]}` but its data is a `{named}` key",
                      "write `\"" + " ".join([named, *fields[1:]]) + "\"`")
    return " ".join(fields)


def _boot_path(keyword: str) -> Callable[[_Lowerer, NodeDraft, Statement], None]:
    def lower(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
        setattr(d, keyword, _absolute_path(stmt.value, keyword))
        d.boot_spans[keyword] = stmt.span
    return lower


for _keyword in ("image", "kernel", "initrd"):
    statement(_keyword)(_boot_path(_keyword))


@statement("cmdline")
def _cmdline(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    text = v.string(stmt.value)
    if any(ord(c) < 32 for c in text):
        raise Invalid(stmt.value.span, "the kernel command line contains a control character", "remove it")
    d.cmdline = text
    d.boot_spans["cmdline"] = stmt.span


@statement("user")
def _user(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    tok = stmt.value
    if tok.text == "root":
        raise Invalid(tok.span, "`root` is not a user name topoc can create",
                      "`root` is the image's own account; cloud-init creates a new one here")
    if not USER_RE.fullmatch(tok.text):
        raise Invalid(tok.span, f"`{tok.text}` is not a user name topoc can create",
                      "user names are lower-case letters, digits, `_` and `-`, starting with a letter "
                      "or `_`, at most 32 characters (useradd(8))")
    d.user = tok.text


@statement("ssh-key")
def _ssh_key_statement(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    key = _ssh_key(v.string(stmt.value), stmt.value.span)
    if key not in d.ssh_keys:
        d.ssh_keys.append(key)


@statement("ssh-key-file")
def _ssh_key_file(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    """The key in a .pub file. Read here, like the .topo itself, so that the IR holds the
    key and every backend stays pure; a relative path is the .topo file's."""
    tok = stmt.value
    written = v.string(tok)
    path = os.path.expanduser(written)
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(lw.tree.file), path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip() and not line.startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
        raise Invalid(tok.span, f"cannot read the SSH key file `{written}`: {reason}",
                      "give the path of a public key (.pub), or paste it with `ssh-key \"...\"`") from None
    if len(lines) != 1:
        raise Invalid(tok.span, f"`{written}` holds {len(lines)} keys; `ssh-key-file` takes a file with one",
                      "give one .pub file per `ssh-key-file` line")
    key = _ssh_key(lines[0], tok.span)
    if key not in d.ssh_keys:
        d.ssh_keys.append(key)


@statement("connect")
def _connect(lw: _Lowerer, d: NodeDraft, stmt: Statement) -> None:
    """`connect URI`: a libvirt URI (topoc.model.uri says what makes one)."""
    from topoc.model.uri import UriError, parse_uri, unknown_parameter_hint

    text = v.string(stmt.value)
    try:
        uri = parse_uri(text)
    except UriError as e:
        raise Invalid(stmt.value.span, e.message, e.hint) from None
    for name in uri.unknown_params:
        lw.say(UNKNOWN_URI_PARAMETER, "unknown", stmt.value.span, unknown_parameter_hint(uri), name=name)
    d.connect = text


class _Reported(Exception):
    """A statement whose problems were reported already: leave it out."""


# --- the lowering pass ----------------------------------------------------------------


@dataclass
class _Lowerer:
    tree: SyntaxTree
    diagnostics: list[Diagnostic] = field(default_factory=list)
    lab_name: str | None = None
    lab_span: Span | None = None
    networks: dict[str, Network] = field(default_factory=dict)
    nodes: list[NodeDraft] = field(default_factory=list)
    forwards: list[tuple[Statement, Forward]] = field(default_factory=list)
    expects: list[Expect] = field(default_factory=list)
    node_names: dict[str, Span] = field(default_factory=dict)
    node_kinds: dict[str, str] = field(default_factory=dict)
    host_block_names: list[str] = field(default_factory=list)  # every `host` block, in order
    network_names: dict[str, Span] = field(default_factory=dict)
    host_refs: list[Token] = field(default_factory=list)
    poisoned: set[str] = field(default_factory=set)
    # Names a file uses that some failed declaration meant (an invalid name, a header the
    # parser skipped): never reported as undefined.
    unusable: set[str] = field(default_factory=set)

    def report(self, code: Code, span: Span, message: str, hint: str | None = None,
               severity: Severity | None = None) -> None:
        self.diagnostics.append(diagnostic(code, span, message, hint, severity))

    def say(self, code: Code, key: str, span: Span, hint: str | None = None, **values: object) -> None:
        """Report the code's message `key` (topoc.codes), with its `key_hint` or `hint`."""
        self.report(code, span, code.message(key, **values), hint or code.hint(key, **values))

    def report_invalid(self, e: Invalid) -> None:
        self.report(e.code, e.span, e.message, e.hint)

    def attempt(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Invalid as e:
            self.report_invalid(e)
            return None

    def damaged(self, block: Block) -> bool:
        """Whether the parser skipped a statement of this block."""
        if not self.tree.lost_lines:
            return False
        return any(block.span.line <= line <= block.span.end_line for line in self.tree.lost_lines)

    # -- names --

    def declare(self, table: dict[str, Span], tok: Token, what: str) -> bool:
        try:
            name = v.name(tok, what)
        except Invalid as e:
            self.report_invalid(e)
            self.unusable.add(tok.text)
            return False
        if name in table:
            if table is self.node_names:
                self.say(DUPLICATE_NAME, "node", tok.span, name=name, kind=self.node_kinds[name],
                         line=table[name].line)
            else:
                self.say(DUPLICATE_NAME, "network", tok.span, what=what, name=name, line=table[name].line)
            return False
        table[name] = tok.span
        if table is self.node_names:
            self.node_kinds[name] = what
        return True

    def statements(self, block: Block, draft: Draft) -> dict[str, Statement]:
        """Lower each statement of the block into its draft; the single ones, by keyword."""
        seen: dict[str, Statement] = {}
        for stmt in block.body:
            if stmt.kind in SINGLE:
                # Once per family for address/subnet/dhcp: the IPv6 one is seen as `address6`...
                family = family_of_text(stmt.tokens[1].text) if stmt.kind in PER_FAMILY else None
                key = stmt.kind + ("6" if family is IPV6 else "")
                if key in seen:
                    if family is None:
                        self.say(DUPLICATE_STATEMENT, "in_block", stmt.span, keyword=stmt.kind, kind=block.kind,
                                 name=block.name.text, line=seen[key].span.line)
                    else:
                        self.say(DUPLICATE_STATEMENT, "family_in_block", stmt.span, keyword=stmt.kind,
                                 family=family.title, kind=block.kind, name=block.name.text,
                                 line=seen[key].span.line)
                    continue
                seen[key] = stmt
            try:
                _STATEMENT_FNS[stmt.kind](self, draft, stmt)
            except Invalid as e:
                self.report_invalid(e)
                draft.failed.add(stmt.kind)
            except _Reported:
                draft.failed.add(stmt.kind)
        return seen

    # -- blocks --

    def network(self, block: Block) -> None:
        if not self.declare(self.network_names, block.name, "network"):
            return
        name = block.name.text
        d = NetworkDraft(block, name)
        d.one = self.statements(block, d)
        network = self.network_from(d)
        if network is None or self.damaged(block):
            self.poisoned.add(name)
        if network is not None:
            self.networks[name] = network

    def network_from(self, d: NetworkDraft) -> Network | None:
        """The network, or None when it cannot be modelled (reported, unless it only
        follows from a value already reported or a statement the parser skipped)."""
        block, name, one = d.block, d.name, d.one
        # A statement the parser skipped may be the one that seems missing: say nothing.
        quiet = self.damaged(block)
        if "mode" not in one:
            if not self.damaged(block):
                self.say(MISSING_STATEMENT, "no_mode", block.name.span, network=name)
            return None
        mode = d.mode
        if block.on is not None:
            if mode is Mode.EXTERNAL:
                self.say(INVALID_VALUE, "external_on_host", block.on.span, network=name, host=block.on.text)
                return None
            hosts = self.on_hosts(block)
            if hosts is None:
                return None
            self.host_refs.extend(hosts)
            if len(hosts) > 1 and mode is Mode.BRIDGED:
                self.say(INVALID_VALUE, "bridged_on_hosts", hosts[1].span, network=name)
                return None
            d.hosts = hosts
        if mode is None:
            return None  # its value was reported
        if d.failed - _NETWORK_LEAF_VALUES:
            return None
        written = {k for k in one if k not in d.failed}
        ok = True
        address, address6 = d.address, d.address6
        if mode is Mode.EXTERNAL:
            for keyword in ("bridge", *_both("address"), *_both("dhcp"), "dns", "domain", "stp", "name", "nat6"):
                if keyword in written:
                    self.say(INVALID_VALUE, "not_for_external", one[keyword].span, keyword=one[keyword].kind,
                             network=name)
                    ok = False
            if "subnet" not in one and "subnet6" not in one:
                if not quiet:
                    self.say(MISSING_STATEMENT, "no_subnet", block.name.span, network=name)
                ok = False
        elif mode is Mode.BRIDGED:
            # libvirt's <forward mode='bridge'/> network is the LAN's segment: no <ip>, no
            # dnsmasq, and the host bridge's own settings are the host's business
            # (https://libvirt.org/formatnetwork.html#using-an-existing-host-bridge).
            for keyword in (*_both("address"), *_both("subnet"), *_both("dhcp"), "dns", "domain", "mtu", "stp",
                            "nat6"):
                if keyword in written:
                    self.say(INVALID_VALUE, "not_for_bridged", one[keyword].span, keyword=one[keyword].kind,
                             network=name)
                    ok = False
        elif mode in v.ROUTING_MODES and address is None and address6 is None:
            if not quiet:
                self.say(MISSING_STATEMENT, "no_address", block.name.span, mode=mode.value, network=name)
            ok = False
        for family in FAMILIES:
            subnet_key, given = ("subnet", address) if family is IPV4 else ("subnet6", address6)
            subnet = d.subnet if family is IPV4 else d.subnet6
            if subnet_key in one and given is not None and subnet != given.network:
                self.say(INVALID_VALUE, "subnet_disagrees", one[subnet_key].value.span, subnet=subnet,
                         address=given, network=given.network)
                ok = False
        for keyword in ("dns", "domain"):
            asked = keyword in written and (keyword != "dns" or d.dns)
            if asked and address is None and address6 is None and mode not in (Mode.EXTERNAL, Mode.BRIDGED):
                if quiet:
                    return None
                self.say(INVALID_VALUE, "dns_without_address", one[keyword].span, network=name, keyword=keyword)
                ok = False
        if d.dhcp is not None and address is None and mode is not Mode.BRIDGED:
            if quiet:
                return None
            if address6 is None:
                self.say(INVALID_VALUE, "dhcp_without_address", one["dhcp"].span, network=name)
            else:
                self.say(INVALID_VALUE, "family_without_address", one["dhcp"].span, network=name,
                         family=IPV4.title, keyword="dhcp", example="10.0.0.1/24")
            ok = False
        if d.dhcp6 is not None and address6 is None and mode is not Mode.BRIDGED:
            if quiet:
                return None
            self.say(INVALID_VALUE, "family_without_address", one["dhcp6"].span, network=name,
                     family=IPV6.title, keyword="dhcp", example="fd00::1/64")
            ok = False
        nat6 = d.nat6
        if nat6 and mode is not Mode.NAT:
            self.say(INVALID_VALUE, "nat6_mode", one["nat6"].span, network=name, mode=mode.value)
            nat6 = False
        elif nat6 and address6 is None:
            self.say(INVALID_VALUE, "nat6_without_ipv6", one["nat6"].span, network=name)
            nat6 = False
        masquerade = d.masquerade
        if masquerade and "masquerade" in written and mode not in DEFAULT_PROFILE.routed_modes:
            # libvirt masquerades a nat network itself; other modes route no subnet out.
            # Only the value is left out: the network stays.
            self.say(INVALID_VALUE, "masquerade_mode", one["masquerade"].span, network=name,
                     mode=mode.value, hint=("drop it: libvirt masquerades a nat network already"
                                            if mode is Mode.NAT else None))
            masquerade = False
        extra_hosts = tuple(t.text for t in d.hosts[1:])
        if "vni" in written and not extra_hosts:
            self.say(INVALID_VALUE, "vni_on_one_host", one["vni"].span, network=name)
            ok = False
        if not ok:
            return None
        vni, mtu = d.vni, d.mtu
        if extra_hosts:
            vni = vni or naming.derived_vni(self.lab_or_placeholder(), name)
            # The VXLAN header costs 50 bytes of the underlay's 1500 (topoc.checks.spanning
            # warns about a written MTU that leaves no room for it).
            mtu = mtu or VXLAN_DEFAULT_MTU
        bridge, derived = d.bridge, False
        if bridge is None and mode is not Mode.EXTERNAL:
            bridge, derived = naming.derived_bridge(self.lab_or_placeholder(), name), True
        return Network(
            name=name, host=d.hosts[0].text if d.hosts else None, mode=mode, via=d.via,
            bridge=bridge, bridge_derived=derived, address=address,
            declared_subnet=d.subnet,
            dhcp=d.dhcp, dns=d.dns, domain=d.domain, mtu=mtu, stp=d.stp, span=block.span,
            masquerade=masquerade, mode_span=one["mode"].span,
            address_span=one["address"].value.span if "address" in one else block.name.span,
            bridge_span=one["bridge"].value.span if "bridge" in one else block.name.span,
            subnet_span=one["subnet"].value.span if "subnet" in one else block.name.span,
            extra_hosts=extra_hosts, vni=vni,
            address6=address6, declared_subnet6=d.subnet6, dhcp6=d.dhcp6, nat6=nat6,
            address6_span=one["address6"].value.span if "address6" in one else block.name.span,
            subnet6_span=one["subnet6"].value.span if "subnet6" in one else block.name.span,
            vni_span=one["vni"].value.span if "vni" in one else block.name.span,
            exact_name=d.exact_name, exact_name_span=one["name"].value.span if "name" in one else UNKNOWN,
        )

    def on_hosts(self, block: Block) -> tuple[Token, ...] | None:
        """The hosts of `on H1, H2, ...`: names joined by commas, each once."""
        hosts = block.on_hosts
        written = " ".join(t.text for t in block.header[3:])
        if not hosts or not re.fullmatch(r"[^,\s]+(\s*,\s*[^,\s]+)*", written):
            self.say(INVALID_VALUE, "not_host_list",
                     block.on.span if block.on is not None else block.name.span, text=written)
            return None
        seen: set[str] = set()
        for tok in hosts:
            if tok.text in seen:
                self.say(DUPLICATE_NAME, "host_twice", tok.span, name=tok.text)
                return None
            seen.add(tok.text)
        return hosts

    def lab_or_placeholder(self) -> str:
        return self.lab_name or "lab"

    def node(self, block: Block) -> None:
        """A host, VM or external: its statements now, its nics once every network is known."""
        if not self.declare(self.node_names, block.name, block.kind):
            return
        d = NodeDraft(block.kind, block, block.name.text)
        self.statements(block, d)
        if block.kind == "vm":
            self.vm_boot_combinations(d)
        if block.kind == "vm" and block.on is not None:
            if len(block.header) > 4 or "," in block.on.text:
                self.say(INVALID_VALUE, "vm_on_hosts", block.on.span, vm=d.name)
                d.unplaced = True
            else:
                self.host_refs.append(block.on)
        self.unique_nic_names(d)
        for i, p in enumerate(d.nics):
            if p is None:
                continue
            if block.kind == "host" and p.iface is None:
                self.say(INVALID_VALUE, "host_nic_unnamed", p.stmt.tokens[0].span)
                d.nics[i] = None
            elif block.kind == "host" and p.address is None:
                self.say(MISSING_STATEMENT, "host_nic_address", p.stmt.span, iface=p.iface, host=block.name.text)
                d.nics[i] = None
            elif block.kind == "external" and p.address is None:
                self.say(MISSING_STATEMENT, "external_nic_address", p.stmt.span, node=block.name.text)
                d.nics[i] = None
        if "nic" in d.failed or "route" in d.failed or None in d.nics or self.damaged(block):
            d.incomplete = True
        self.nodes.append(d)

    def vm_boot_combinations(self, d: NodeDraft) -> None:
        """`image` with `disk`; `initrd` or `cmdline` without `kernel`
        (https://libvirt.org/formatdomain.html#direct-kernel-boot)."""
        spans = d.boot_spans
        if "image" in spans and "disk" in spans:
            first, second = sorted((spans["image"], spans["disk"]))
            self.report(CONFLICTING_STATEMENTS, second,
                        f"vm `{d.name}` has both `image` and `disk` (line {first.line})",
                        "keep `image` for a base image topoc overlays (never written), or `disk` "
                        "for a disk you manage yourself that the VM writes to")
        for key in ("initrd", "cmdline"):
            if key in spans and "kernel" not in spans and "kernel" not in d.failed:
                self.report(MISSING_STATEMENT, spans[key],
                            f"`{key}` is for a direct kernel boot, and vm `{d.name}` has no `kernel`",
                            f"add `kernel PATH` (the kernel to boot{' with this initrd' if key == 'initrd' else ''}), "
                            f"or remove `{key}`")

    def unique_nic_names(self, d: NodeDraft) -> None:
        """Two nics of one node cannot share an interface name (written or eth<N>)."""
        seen: dict[str, NicDraft] = {}
        for i, p in enumerate(d.nics):
            if p is None:
                continue
            name = p.iface or f"eth{i}"
            first = seen.setdefault(name, p)
            if first is p:
                continue
            where = p.stmt.value.span if p.iface else p.stmt.tokens[0].span
            if p.iface is None:
                hint = DUPLICATE_NAME.message("nic_hint_unnamed", index=len(d.nics), network=p.network.text)
            elif first.iface is None:
                hint = DUPLICATE_NAME.message("nic_hint_first_unnamed", line=first.stmt.span.line, name=name)
            else:
                hint = DUPLICATE_NAME.message("nic_hint_named")
            self.say(DUPLICATE_NAME, "nic", where, hint, kind=d.kind, node=d.name, name=name,
                     line=first.stmt.span.line)
            d.nics[i] = None  # reported: the nic is left out

    def forward(self, stmt: Statement) -> None:
        proto_tok, port_tok = stmt.values
        target_tok = stmt.after("to")
        assert target_tok is not None  # the grammar requires it
        # Each part is checked on its own, so one line can report all its mistakes.
        proto = self.attempt(lambda: v.protocol(proto_tok))
        port = self.attempt(lambda: v.integer(port_tok, "port", 1, 65535))
        vm_and_port = self.attempt(lambda: v.vm_port(target_tok, port_tok.text))
        if proto is not None and port is not None and vm_and_port is not None:
            vm_name, vm_port = vm_and_port
            self.forwards.append((stmt, Forward(proto, port, vm_name, vm_port, stmt.span)))

    def expect(self, stmt: Statement) -> None:
        (arrow, dst), = stmt.options()
        src = stmt.value
        self.expects.append(Expect(src.text, dst.text, arrow.kind == "->", stmt.span, src.span, dst.span))

    # -- the whole file --

    def run(self) -> Lowered:
        tree = self.tree
        self.unusable |= tree.lost_names
        labs = [i for i in tree.items if isinstance(i, Statement) and i.kind == "lab"]
        for stmt in labs:
            if self.lab_name is not None and self.lab_span is not None:
                self.say(DUPLICATE_STATEMENT, "lab", stmt.span, name=self.lab_name, line=self.lab_span.line)
                continue
            name = self.attempt(partial(v.name, stmt.value, "lab"))
            if name is not None:
                self.lab_name, self.lab_span = name, stmt.span
        if self.lab_name is None and not labs and "lab" not in tree.lost_keywords:
            self.say(MISSING_STATEMENT, "no_lab", Span(tree.file, 1, 1, 1, 2))
        self.host_block_names = [i.name.text for i in tree.items if isinstance(i, Block) and i.kind == "host"]
        for item in tree.items:
            if isinstance(item, Block):
                if item.kind == "network":
                    self.network(item)
                else:
                    self.node(item)
            elif item.kind == "forward":
                self.forward(item)
            elif item.kind == "expect":
                self.expect(item)
        self.resolve_hosts()
        hosts, vms, externals = self.resolve_nodes()
        forwards = self.resolve_forwards({vm.name for vm in vms})
        built = {n.name for group in (hosts, vms, externals) for n in group}
        expects = self.resolve_expects(built)
        vms = self.derive_macs(vms)
        lab = Lab(
            name=self.lab_or_placeholder(), file=tree.file, networks=tuple(self.networks.values()),
            hosts=tuple(hosts), vms=tuple(vms), externals=tuple(externals),
            forwards=tuple(forwards), expects=tuple(expects),
            span=self.lab_span or Span(tree.file, 1, 1, 1, 2),
        )
        return Lowered(lab, self.diagnostics, frozenset(self.poisoned | self.unusable))

    def some_header_lost(self) -> bool:
        """Whether the parser skipped a top-level block header (a host, say, it may name)."""
        return bool(self.tree.lost_names)

    def resolve_hosts(self) -> None:
        """Every `on HOST` names a host; a managed network with no `on` runs on the only
        host. A network whose host is unknown is left out (its nics' nodes then too)."""
        host_blocks = set(self.host_block_names)
        for tok in self.host_refs:
            if tok.text in self.unusable:
                continue
            if tok.text in self.node_kinds and tok.text not in host_blocks:
                self.say(UNDEFINED_NAME, "not_a_host", tok.span,
                         _name_hint("", host_blocks, "hosts", "define one with `host NAME { ... }`"),
                         name=tok.text, kind=_A_KIND[self.node_kinds[tok.text]])
            elif tok.text not in host_blocks:
                self.say(UNDEFINED_NAME, "no_host", tok.span,
                         _name_hint(tok.text, host_blocks, "hosts", "define it with `host NAME { ... }`"),
                         name=tok.text)
        for name, net in list(self.networks.items()):
            if net.host is not None and net.host not in host_blocks:
                del self.networks[name]
                self.poisoned.add(name)
            elif net.managed and net.host is None:
                if len(host_blocks) == 1:
                    self.networks[name] = replace(net, host=next(iter(host_blocks)))
                    continue
                if not self.some_header_lost():
                    hosts = self.host_block_names
                    key = "network_host_hint_hosts" if hosts else "network_host_hint"
                    hint = MISSING_STATEMENT.message(key, network=net.name, first=hosts[0] if hosts else "",
                                                     hosts=", ".join(hosts))
                    self.say(MISSING_STATEMENT, "network_host", net.span.sub(0, len("network")), hint,
                             network=net.name)
                del self.networks[name]
                self.poisoned.add(name)

    def resolve_nodes(self) -> tuple[list[Host], list[Vm], list[External]]:
        """Build nics now that every network is known (names may be used before definition)."""
        hosts: list[Host] = []
        vms: list[Vm] = []
        externals: list[External] = []
        built: list[tuple[NodeDraft, tuple[Nic, ...]]] = []
        for d in self.nodes:
            nics = tuple(nic for p in d.nics if p is not None and (nic := self.finish_nic(p, d)) is not None)
            built.append((d, nics))
            if d.kind == "host":
                connect = next((s for s in d.block.body if s.kind == "connect"), None)
                hosts.append(Host(d.name, nics, tuple(d.routes), d.block.span, d.connect,
                                  connect.value.span if connect is not None and d.connect is not None
                                  else UNKNOWN))
            elif d.kind == "external":
                externals.append(External(d.name, nics, tuple(d.routes), d.block.span))
        built_hosts = {h.name for h in hosts}
        for d, nics in built:
            if d.kind != "vm":
                continue
            on = d.block.on
            host = on.text if on is not None else self.only_host(d.block)
            if host is None or host not in built_hosts or d.unplaced:
                self.poisoned.add(d.name)  # reported, or its host failed
                continue
            name_stmt = next((s for s in d.block.body if s.kind == "name"), None)
            vms.append(Vm(d.name, host, d.memory, d.vcpus, d.disk, nics, tuple(d.routes), d.block.span,
                          exact_name=d.exact_name,
                          exact_name_span=name_stmt.value.span if name_stmt and d.exact_name else UNKNOWN,
                          image=d.image, kernel=d.kernel, initrd=d.initrd, cmdline=d.cmdline, user=d.user,
                          ssh_keys=tuple(d.ssh_keys),
                          image_span=d.boot_spans.get("image", UNKNOWN),
                          kernel_span=d.boot_spans.get("kernel", UNKNOWN),
                          initrd_span=d.boot_spans.get("initrd", UNKNOWN)))
        for d in self.nodes:
            if d.incomplete:
                self.poisoned.add(d.name)
        return hosts, vms, externals

    def only_host(self, block: Block) -> str | None:
        """The host of a VM that names none: the only host, when there is exactly one."""
        hosts = self.host_block_names
        if len(hosts) == 1:
            return hosts[0]
        if self.some_header_lost():
            return None
        vm = block.name.text
        hint = MISSING_STATEMENT.message("vm_host_hint_hosts" if hosts else "vm_host_hint", vm=vm,
                                         first=hosts[0] if hosts else "", hosts=", ".join(hosts))
        self.say(MISSING_STATEMENT, "vm_host", block.name.span, hint, vm=vm)
        return None

    def bridged_lan_subnet(self, network: Network, family: Family) -> IPNetwork | None:
        """A bridged network's VMs are on the LAN its host's nic (`bridged to NIC`) is on:
        that LAN's subnet, for addresses written without a prefix."""
        if network.mode is not Mode.BRIDGED or network.host is None or network.via is None:
            return None
        for d in self.nodes:
            if d.kind != "host" or d.name != network.host:
                continue
            for p in d.nics:
                if p is not None and p.iface == network.via:
                    lan = self.networks.get(p.network.text)
                    return lan.subnet_in(family) if lan is not None else None
        return None

    def finish_nic(self, p: NicDraft, d: NodeDraft) -> Nic | None:
        """The nic on its network (None, and its node incomplete, when the network is
        unknown or failed); a bad address leaves the nic without one."""
        network = self.networks.get(p.network.text)
        if network is None:
            d.incomplete = True
            if p.network.text not in self.network_names and p.network.text not in self.unusable:
                self.say(UNDEFINED_NAME, "no_network", p.network.span,
                         _name_hint(p.network.text, self.network_names, "networks",
                                    "define it with `network NAME { ... }`"), name=p.network.text)
            return None
        address = self.nic_address(p.address, p.written, network, d)
        address6 = self.nic_address(p.address6, p.written6, network, d)
        def span(key: str) -> Span:
            return p.options[key].span if key in p.options else UNKNOWN

        return Nic(p.owner, p.index, p.iface or f"eth{p.index}", network.name,
                   address if isinstance(address, IPv4Interface) else None,
                   p.mac, False, p.model, p.gateway if isinstance(p.gateway, IPv4Address) else None,
                   p.stmt.span, address_span=span("address"), mac_span=span("mac"),
                   gateway_span=span("gateway"),
                   address6=address6 if isinstance(address6, IPv6Interface) else None,
                   gateway6=p.gateway6 if isinstance(p.gateway6, IPv6Address) else None,
                   address6_span=span("address6"), gateway6_span=span("gateway6"))

    def nic_address(self, token: Token | None, written: IPAddress | IPInterface | None, network: Network,
                    d: NodeDraft) -> IPInterface | None:
        """A nic's address of one family with its prefix: as written, or the network's (a
        bridged network's: its LAN's). None when none is written, or it was reported."""
        if written is None or token is None:
            return None
        if isinstance(written, IPv4Interface | IPv6Interface):
            return written
        family = family_of(written)
        subnet = network.subnet_in(family) or self.bridged_lan_subnet(network, family)
        if subnet is None:
            self.say(INVALID_VALUE, "no_prefix_bridged" if network.mode is Mode.BRIDGED
                     else "no_prefix_to_take", token.span, address=written,
                     network=network.name, host=network.host, nic=network.via,
                     family=family.title, example=f"{written}/{64 if family is IPV6 else 24}")
            d.incomplete = True
            self.poisoned.add(network.name)
            return None
        # From the int, not the address object: ipaddress would rebuild the address from its
        # string (str(), then parse it again; for IPv6, with hextet compression).
        return family.facts.interface((int(written), subnet.prefixlen))

    def resolve_forwards(self, built_vms: set[str]) -> list[Forward]:
        # Every VM declared, even one that failed (reported already), so a forward to it
        # is not called undefined on top of that.
        vm_names = {name for name, kind in self.node_kinds.items() if kind == "vm"}
        kept = []
        for stmt, fwd in self.forwards:
            target = stmt.after("to")
            assert target is not None
            if fwd.vm in self.unusable:
                continue
            if fwd.vm in self.node_kinds and fwd.vm not in vm_names:
                self.say(UNDEFINED_NAME, "not_a_vm", target.span.sub(0, len(fwd.vm)),
                         _name_hint("", vm_names, "VMs", "define one with `vm NAME on HOST { ... }`"),
                         name=fwd.vm, kind=_A_KIND[self.node_kinds[fwd.vm]])
            elif fwd.vm not in vm_names:
                self.say(UNDEFINED_NAME, "no_vm", target.span.sub(0, len(fwd.vm)),
                         _name_hint(fwd.vm, vm_names, "VMs", "define it with `vm NAME on HOST { ... }`"),
                         name=fwd.vm)
            elif fwd.vm in built_vms:
                kept.append(fwd)
        return kept

    def resolve_expects(self, built: set[str]) -> list[Expect]:
        node_names = set(self.node_names)
        kept = []
        for exp in self.expects:
            ok = True
            for name, span in ((exp.src, exp.src_span), (exp.dst, exp.dst_span)):
                if name in node_names:
                    ok = ok and name in built
                    continue
                if parse_address(name) is not None:
                    continue
                ok = False
                if name in self.unusable:
                    continue
                if re.fullmatch(r"[0-9.]+", name):
                    self.say(INVALID_VALUE, "expect_not_ipv4", span, text=name)
                elif re.fullmatch(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*", name):
                    self.say(INVALID_VALUE, "expect_not_ipv6", span, text=name)
                elif name in self.network_names:
                    self.say(UNDEFINED_NAME, "network_in_expect", span, name=name)
                else:
                    self.say(UNDEFINED_NAME, "no_node", span,
                             _name_hint(name, node_names, "nodes",
                                        "give an IP address, or define a host, VM or external"), name=name)
            if ok:
                kept.append(exp)
        return kept

    def derive_macs(self, vms: list[Vm]) -> list[Vm]:
        """Give every VM nic a MAC: written ones stay; the others are derived from the lab,
        VM and nic, stepping past any MAC already taken (deterministic: VMs in name order)."""
        taken = {nic.mac for vm in vms for nic in vm.nics if nic.mac is not None}
        lab = self.lab_or_placeholder()
        derived: dict[tuple[str, int], str] = {}
        for vm in sorted(vms, key=lambda x: x.name):
            for nic in vm.nics:
                if nic.mac is None:
                    attempt = 0
                    mac = naming.derived_mac(lab, vm.name, nic.index)
                    while mac in taken:
                        attempt += 1
                        mac = naming.derived_mac(lab, vm.name, nic.index, attempt)
                    taken.add(mac)
                    derived[(vm.name, nic.index)] = mac
        return [
            replace(vm, nics=tuple(
                replace(nic, mac=derived[(vm.name, nic.index)], mac_derived=True)
                if (vm.name, nic.index) in derived else nic
                for nic in vm.nics))
            for vm in vms
        ]


def lower(tree: SyntaxTree) -> Lowered:
    """Lower a syntax tree: every entity that can be lowered, every problem reported once."""
    return _Lowerer(tree).run()
