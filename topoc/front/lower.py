"""Lowering: the syntax tree -> the typed IR, with every value checked on the way.

This is where text becomes facts: addresses become `ipaddress` objects (a nic address
without a prefix takes its network's), sizes become bytes, names are resolved (they may
be used before they are defined), MACs that were left out are derived (see
topoc.model.naming) and everything else that was left out gets its documented default. Each
value that cannot become a fact is an `invalid-value`, `undefined-name`,
`duplicate-name`, `duplicate-statement` or `missing-statement` diagnostic pointing at
the exact token. Semantic checks on the finished model (conflicts, reachability) are
not here: they live in topoc.checks.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import struct
from dataclasses import dataclass, field, replace
from ipaddress import AddressValueError, IPv4Address, IPv4Interface, IPv4Network, ip_address
from typing import Callable, Iterable

from topoc.model import naming
from topoc.diagnostics import (CONFLICTING_STATEMENTS, DUPLICATE_NAME, DUPLICATE_STATEMENT, INVALID_VALUE, MAC_INVALID,
                               UNKNOWN_URI_PARAMETER,
                               MISSING_STATEMENT, UNDEFINED_NAME, Code, Diagnostic, Severity,
                               diagnostic)
from topoc.model.ir import (DhcpRange, Expect, External, Forward, Host, Lab, Mode, Network, Nic, Route,
                      Vm)
from topoc.front.span import UNKNOWN, Span
from topoc.front.syntax import Block, Statement, SyntaxTree, Token

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*")
# Linux accepts almost any byte in an interface name; topoc accepts the conventional
# ones (eth0, enp1s0, br-lan, eth0.100, wlan0) so names are safe in scripts unquoted.
IFNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAC_RE = re.compile(r"([0-9A-Fa-f]{2})([:-][0-9A-Fa-f]{2}){5}")
# libvirt's schema allows [a-zA-Z0-9_-] in <model type=...> (domaincommon.rng).
MODEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
DOMAIN_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")

# Units as libvirt reads them (https://libvirt.org/formatdomain.html#memory-allocation):
# K, M, G, T and KiB... are powers of 1024; KB, MB, GB, TB are powers of 1000.
_UNITS = {
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
SIZE_RE = re.compile(r"([0-9]+)([A-Za-z]+)")

MODE_WORDS = [m.value for m in Mode]

# Statements that may appear at most once in a block.
SINGLE = {"mode", "bridge", "address", "subnet", "dhcp", "dns", "domain", "mtu", "stp",
          "memory", "vcpus", "disk", "connect", "vni", "name", "image", "kernel", "initrd", "cmdline", "user"}

# A login name as useradd(8) takes it by default (Debian's NAME_REGEX): a lower-case
# letter or `_`, then lower-case letters, digits, `_` and `-`, at most 32 characters.
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# The public key types OpenSSH accepts in authorized_keys (sshd(8), "AUTHORIZED_KEYS
# FILE FORMAT": https://man.openbsd.org/sshd.8#AUTHORIZED_KEYS_FILE_FORMAT).
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                 "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss")

# A network on several hosts without `mtu`: 1500 less the 50 bytes of VXLAN over IPv4
# (https://docs.kernel.org/networking/vxlan.html; RFC 7348 section 4.3).
VXLAN_DEFAULT_MTU = 1450

_A_KIND = {"host": "a host", "vm": "a VM", "external": "an external"}

DEFAULT_MEMORY = 512 * 1024**2
MAX_MEMORY = 16 * 1024**4


class _Invalid(Exception):
    """A value that cannot be lowered; caught per statement and made a diagnostic."""

    def __init__(self, span: Span, message: str, hint: str | None = None,
                 code: Code = INVALID_VALUE) -> None:
        super().__init__(message)
        self.span, self.message, self.hint, self.code = span, message, hint, code


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


def _name_hint(word: str, choices: Iterable[str], what: str, otherwise: str) -> str:
    """"did you mean" for a near miss; else the names there are (a few), and how to add one."""
    names = sorted(choices)
    near = _suggest(word, names)
    if near:
        return near
    if not names:
        return otherwise
    shown = ", ".join(f"`{n}`" for n in names[:6]) + (", ..." if len(names) > 6 else "")
    return f"the {what} are {shown}; or {otherwise}"


# --- values ---------------------------------------------------------------------------


def _name(tok: Token, what: str) -> str:
    if tok.kind != "WORD" or not NAME_RE.fullmatch(tok.text):
        raise _Invalid(tok.span, f"`{tok.text}` is not a valid {what} name",
                       "names start with a letter or `_` and hold letters, digits, `_` and "
                       "inner `-`")
    return tok.text


def _ifname(tok: Token, what: str = "interface") -> str:
    if tok.kind != "WORD" or not IFNAME_RE.fullmatch(tok.text):
        raise _Invalid(tok.span, f"`{tok.text}` is not a valid {what} name",
                       "interface names hold letters, digits, `_`, `.` and `-`")
    if len(tok.text) > naming.IFNAMSIZ:
        raise _Invalid(tok.span, f"{what} name `{tok.text}` is {len(tok.text)} characters long; "
                       f"Linux allows at most {naming.IFNAMSIZ}",
                       f"shorten it to {naming.IFNAMSIZ} characters or fewer")
    return tok.text


def _address(tok: Token) -> IPv4Address:
    try:
        return IPv4Address(tok.text)
    except AddressValueError:
        raise _Invalid(tok.span, *_why_not_ipv4(tok.text)) from None


def _why_not_ipv4(text: str) -> tuple[str, str]:
    try:
        if ip_address(text.split("/")[0]).version == 6:
            return f"`{text}` is an IPv6 address; topoc handles IPv4 for now", \
                "use an IPv4 address such as 10.0.0.1"
    except ValueError:
        pass  # not an address of any version: the messages below say what it is
    if "/" in text:
        return f"`{text}` has a prefix where a plain address belongs", \
            f"write `{text.split('/')[0]}`"
    return f"`{text}` is not an IPv4 address", "write four numbers 0-255 joined by dots, e.g. 10.0.0.1"


def _interface(tok: Token) -> IPv4Interface:
    """`IP/PREFIX` (the prefix is required here)."""
    text = tok.text
    if "/" not in text:
        raise _Invalid(tok.span, f"`{text}` has no prefix length",
                       f"write it with its prefix, e.g. `{text}/24`")
    ip_text, _, prefix = text.partition("/")
    _address(Token(ip_text, "WORD", tok.span))
    if not prefix.isdigit() or not 0 <= int(prefix) <= 32:
        raise _Invalid(tok.span.sub(len(ip_text), len(prefix) + 1), f"`/{prefix}` is not a prefix length",
                       "use a number from 0 to 32")
    return IPv4Interface(text)


def _network_cidr(tok: Token) -> IPv4Network:
    interface = _interface(tok)
    if interface.ip != interface.network.network_address:
        raise _Invalid(tok.span, f"`{tok.text}` has host bits set",
                       f"the network is `{interface.network}`")
    return interface.network


def _integer(tok: Token, what: str, low: int, high: int) -> int:
    if not tok.text.isdigit() or not low <= int(tok.text) <= high:
        raise _Invalid(tok.span, f"`{tok.text}` is not a valid {what}",
                       f"use a whole number from {low} to {high}")
    return int(tok.text)


def _switch(tok: Token, what: str) -> bool:
    if tok.text not in ("on", "off"):
        raise _Invalid(tok.span, f"`{what}` takes `on` or `off`, not `{tok.text}`",
                       f"write `{what} on` or `{what} off`")
    return tok.text == "on"


def _size(tok: Token) -> int:
    match = SIZE_RE.fullmatch(tok.text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        hint = "write a number and a unit: 512MiB, 1GiB, 2G (K, M, G, T are powers of 1024)"
        if tok.text.isdigit():
            raise _Invalid(tok.span, f"`{tok.text}` has no unit", hint)
        raise _Invalid(tok.span, f"`{tok.text}` is not a size", hint)
    size = int(match.group(1)) * _UNITS[unit]
    if not 1024**2 <= size <= MAX_MEMORY:
        raise _Invalid(tok.span, f"memory of {tok.text} is out of range", "use 1MiB to 16TiB")
    return size


def _mac(tok: Token) -> str:
    if not MAC_RE.fullmatch(tok.text):
        raise _Invalid(tok.span, f"`{tok.text}` is not a MAC address",
                       "write six hex bytes joined by colons, e.g. 52:54:00:12:34:56", MAC_INVALID)
    return tok.text.lower().replace("-", ":")


def _exact_name(stmt: Statement) -> str:
    """`name NAME` in a network or vm block: the object's libvirt name as is."""
    tok = stmt.args[0]
    problem = naming.exact_name_problem(tok.text)
    if problem is not None:
        raise _Invalid(tok.span, f"`{tok.text}` cannot be a libvirt name: {problem}",
                       "write the name libvirt shows (`virsh net-list --all`, `virsh list --all`)")
    return tok.text


def _exact_name_of(one: dict[str, Statement]) -> tuple[str | None, Span]:
    """The block's `name` statement, lowered (None when it has none); raises _Invalid."""
    if "name" not in one:
        return None, UNKNOWN
    return _exact_name(one["name"]), one["name"].args[0].span


def _string(tok: Token) -> str:
    if tok.kind == "STRING":
        body = tok.text[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    return tok.text


def _path(tok: Token, what: str, example: str, whose: str = "its") -> str:
    """A hypervisor path (disk, image, kernel, initrd): any text XML can hold."""
    path = _string(tok)
    if not path:
        raise _Invalid(tok.span, f"the {what} path is empty", f"write {whose} path, e.g. `{example}`")
    if any(ord(c) < 32 and c != "\t" for c in path):
        # XML 1.0 cannot hold control characters other than tab, CR and LF (and a
        # quoted string has no line breaks), so libvirt could never store the path.
        raise _Invalid(tok.span, f"the {what} path contains a control character", "remove it from the path")
    return path


def _absolute_path(tok: Token, what: str, example: str) -> str:
    path = _path(tok, what, example)
    if not path.startswith("/"):
        # libvirt resolves nothing against the .topo file: a backing store or a kernel
        # is opened by the hypervisor by its absolute path.
        raise _Invalid(tok.span, f"the {what} path `{path}` is not absolute",
                       f"write its absolute path on the hypervisor, e.g. `{example}`")
    return path


def _ssh_key(text: str, span: Span) -> str:
    """One authorized_keys line: TYPE BASE64 [COMMENT], no options. The key blob is
    checked as RFC 4253 section 6.6 frames it: a length-prefixed string naming the type."""
    fields = text.strip().split(None, 2)
    example = 'ssh-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... you@host"'
    if len(fields) < 2 or fields[0] not in SSH_KEY_TYPES:
        raise _Invalid(span, "not an SSH public key (TYPE BASE64 [COMMENT])",
                       f"paste the line of your .pub file, e.g. `{example}`; key types: "
                       + ", ".join(SSH_KEY_TYPES[:3]) + ", ...")
    try:
        blob = base64.b64decode(fields[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        named = blob[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise _Invalid(span, f"the {fields[0]} key's base64 part is damaged",
                       "copy the whole line of the .pub file again") from None
    if named != fields[0]:
        raise _Invalid(span, f"the key says `{fields[0]}` but its data is a `{named}` key",
                       f"write `{named}` as its type")
    return " ".join(fields)


# --- the lowering pass ----------------------------------------------------------------


@dataclass
class _Pending:
    """A nic whose address prefix may come from a network defined later in the file."""

    owner: str
    index: int
    stmt: Statement
    iface: str | None
    network: Token
    address: Token | None
    mac: str | None
    model: str | None
    gateway: IPv4Address | None
    options: dict[str, Token] = field(default_factory=dict)  # for the values' spans


@dataclass
class _Lowerer:
    tree: SyntaxTree
    diagnostics: list[Diagnostic] = field(default_factory=list)
    lab_name: str | None = None
    lab_span: Span | None = None
    networks: list[Network] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    vms: list[Vm] = field(default_factory=list)
    externals: list[External] = field(default_factory=list)
    forwards: list[tuple[Statement, Forward]] = field(default_factory=list)
    expects: list[Expect] = field(default_factory=list)
    node_names: dict[str, Span] = field(default_factory=dict)
    node_kinds: dict[str, str] = field(default_factory=dict)
    host_block_names: list[str] = field(default_factory=list)  # every `host` block, in order
    network_names: dict[str, Span] = field(default_factory=dict)
    host_refs: list[Token] = field(default_factory=list)
    # Nodes wait here until every network is known: (kind, block, nics, routes, *extra).
    pending_nodes: list[tuple] = field(default_factory=list)

    def report(self, code: Code, span: Span, message: str, hint: str | None = None,
               severity: Severity | None = None) -> None:
        self.diagnostics.append(diagnostic(code, span, message, hint, severity))

    def attempt(self, fn: Callable[[], object]) -> object | None:
        try:
            return fn()
        except _Invalid as e:
            self.report(e.code, e.span, e.message, e.hint)
            return None

    # -- names --

    def declare(self, table: dict[str, Span], tok: Token, what: str) -> bool:
        name = self.attempt(lambda: _name(tok, what))
        if name is None:
            return False
        if name in table:
            if table is self.node_names:
                self.report(DUPLICATE_NAME, tok.span,
                            f"the name `{name}` is already taken by {self.node_kinds[name]} "
                            f"`{name}` (line {table[name].line})",
                            "rename one of them; names are unique across hosts, VMs and externals")
            else:
                self.report(DUPLICATE_NAME, tok.span,
                            f"{what} `{name}` is already defined (line {table[name].line})",
                            "rename one of them")
            return False
        table[name] = tok.span
        if table is self.node_names:
            self.node_kinds[name] = what
        return True

    # -- statements shared by blocks --

    def single_statements(self, block: Block) -> dict[str, Statement]:
        seen: dict[str, Statement] = {}
        for stmt in block.body:
            if stmt.kind in SINGLE:
                if stmt.kind in seen:
                    self.report(DUPLICATE_STATEMENT, stmt.span,
                                f"`{stmt.kind}` is given twice in {block.kind} `{block.name.text}` "
                                f"(first on line {seen[stmt.kind].span.line})",
                                "keep one of them")
                    continue
                seen[stmt.kind] = stmt
        return seen

    def route(self, stmt: Statement) -> Route | None:
        dest_tok, _, via_tok = stmt.args

        def build() -> Route:
            if dest_tok.text == "default":
                destination = IPv4Network("0.0.0.0/0")
            else:
                destination = _network_cidr(dest_tok)
            return Route(destination, _address(via_tok), stmt.span)

        return self.attempt(build)  # type: ignore[return-value]

    def nic(self, owner: str, index: int, stmt: Statement) -> _Pending | None:
        args = list(stmt.args)
        iface = None
        if args[0].kind != "on":
            iface = self.attempt(lambda: _ifname(args[0]))
            if iface is None:
                return None
            args = args[1:]
        network = args[1]
        options: dict[str, Token] = {}
        ok = True
        for keyword, value in zip(args[2::2], args[3::2]):
            if keyword.text in options:
                self.report(DUPLICATE_STATEMENT, keyword.span, f"`{keyword.text}` is given twice on this nic",
                            "keep one of them")
                ok = False
            options[keyword.text] = value
        mac = self.attempt(lambda: _mac(options["mac"])) if "mac" in options else None
        model = None
        if "model" in options:
            tok = options["model"]
            if MODEL_RE.fullmatch(tok.text):
                model = tok.text
            else:
                self.report(INVALID_VALUE, tok.span, f"`{tok.text}` is not a NIC model name",
                            "use e.g. virtio, e1000e or rtl8139")
                ok = False
        gateway = self.attempt(lambda: _address(options["gateway"])) if "gateway" in options else None
        if ("mac" in options and mac is None) or ("gateway" in options and gateway is None):
            ok = False
        if not ok:
            return None
        return _Pending(owner, index, stmt, iface, network, options.get("address"), mac, model, gateway,
                        options)

    def node_parts(self, block: Block) -> tuple[list[_Pending], tuple[Route, ...]]:
        nics: list[_Pending] = []
        routes: list[Route] = []
        for stmt in block.body:
            if stmt.kind == "nic":
                pending = self.nic(block.name.text, len(nics), stmt)
                if pending is not None:
                    nics.append(pending)
                else:
                    nics.append(None)  # type: ignore[arg-type]  # keeps indexes stable
            elif stmt.kind == "route":
                route = self.route(stmt)
                if route is not None:
                    routes.append(route)
        self.unique_nic_names(block, nics)
        return nics, tuple(routes)

    def unique_nic_names(self, block: Block, nics: list[_Pending | None]) -> None:
        """Two nics of one node cannot share an interface name (written or eth<N>)."""
        seen: dict[str, _Pending] = {}
        for i, p in enumerate(nics):
            if p is None:
                continue
            name = p.iface or f"eth{i}"
            first = seen.setdefault(name, p)
            if first is p:
                continue
            where = p.stmt.args[0].span if p.iface else p.stmt.tokens[0].span
            if p.iface is None:
                hint = f"name this nic, e.g. `nic eth{len(nics)} on {p.network.text}`"
            elif first.iface is None:
                hint = (f"the nic on line {first.stmt.span.line} has no name, so it is `{name}` "
                        "(eth<N>, N its position from 0); give each nic its own name")
            else:
                hint = "give each nic its own interface name"
            self.report(DUPLICATE_NAME, where,
                        f"{block.kind} `{block.name.text}` already has a nic named `{name}` "
                        f"(line {first.stmt.span.line})", hint)
            nics[i] = None  # reported: the node is not built

    # -- blocks --

    def network(self, block: Block) -> None:
        if not self.declare(self.network_names, block.name, "network"):
            return
        one = self.single_statements(block)
        name = block.name.text
        if "mode" not in one:
            self.report(MISSING_STATEMENT, block.name.span, f"network `{name}` has no `mode`",
                        "add `mode nat`, `mode routed`, `mode isolated`, `mode bridged to IFACE` "
                        "or `mode external`")
            return
        mode_stmt = one["mode"]
        lowered = self.attempt(lambda: self.mode(mode_stmt))
        if lowered is None:
            return
        mode, via = lowered  # type: ignore[misc]
        host = None
        extra_hosts: tuple[str, ...] = ()
        if block.on is not None:
            if mode is Mode.EXTERNAL:
                self.report(INVALID_VALUE, block.on.span,
                            f"external network `{name}` is not on a host: it is the LAN outside",
                            f"remove `on {block.on.text}`")
                return
            hosts = self.on_hosts(block)
            if hosts is None:
                return
            if len(hosts) > 1 and mode is Mode.BRIDGED:
                self.report(INVALID_VALUE, hosts[1].span,
                            f"bridged network `{name}` is the LAN behind one host's NIC; it cannot "
                            "be on several hosts",
                            "give each host a bridged network of its own on the same LAN")
                return
            host = hosts[0].text
            extra_hosts = tuple(t.text for t in hosts[1:])
            self.host_refs.extend(hosts)

        values: dict[str, object] = {}
        converters: dict[str, Callable[[Token], object]] = {
            "bridge": lambda t: _ifname(t, "bridge"),
            "address": _interface,
            "subnet": _network_cidr,
            "dns": lambda t: _switch(t, "dns"),
            "stp": lambda t: _switch(t, "stp"),
            "mtu": lambda t: _integer(t, "MTU", 68, 65535),
            "domain": self.domain,
            "vni": lambda t: _integer(t, "VXLAN network identifier", 1, naming.VNI_MAX),
        }
        ok = True
        for keyword, convert in converters.items():
            if keyword in one:
                value = self.attempt(lambda: convert(one[keyword].args[0]))
                if value is None:
                    ok = False
                values[keyword] = value
        dhcp = None
        if "dhcp" in one:
            dhcp = self.attempt(lambda: self.dhcp(one["dhcp"]))
            ok = ok and dhcp is not None
        exact = self.attempt(lambda: _exact_name_of(one))
        ok = ok and exact is not None
        if not ok:
            return
        exact_name, exact_span = exact  # type: ignore[misc]
        address = values.get("address")
        if mode is Mode.EXTERNAL:
            for keyword in ("bridge", "address", "dhcp", "dns", "domain", "stp", "name"):
                if keyword in one:
                    self.report(INVALID_VALUE, one[keyword].span,
                                f"`{keyword}` does not apply to external network `{name}`: "
                                "topoc does not manage it",
                                "describe the LAN with `subnet` only, and the host's place on "
                                "it with the host's `nic`")
                    ok = False
            if "subnet" not in one:
                self.report(MISSING_STATEMENT, block.name.span,
                            f"external network `{name}` has no `subnet`",
                            "add `subnet CIDR`, e.g. `subnet 192.168.1.0/24`")
                ok = False
        elif mode is Mode.BRIDGED:
            # libvirt's <forward mode='bridge'/> network is the LAN's segment: no <ip>, no
            # dnsmasq, and the host bridge's own settings are the host's business
            # (https://libvirt.org/formatnetwork.html#using-an-existing-host-bridge).
            for keyword in ("address", "subnet", "dhcp", "dns", "domain", "mtu", "stp"):
                if keyword in one:
                    self.report(INVALID_VALUE, one[keyword].span,
                                f"`{keyword}` does not apply to bridged network `{name}`: its "
                                "VMs are on the LAN, which gives their addresses",
                                f"remove `{keyword}`; give each VM nic a LAN address instead")
                    ok = False
        elif mode in (Mode.NAT, Mode.ROUTED, Mode.OPEN) and address is None:
            self.report(MISSING_STATEMENT, block.name.span,
                        f"{mode.value} network `{name}` has no `address`",
                        "add `address IP/PREFIX`: the host's address on the bridge, which "
                        "the VMs use as their gateway")
            ok = False
        if "subnet" in one and address is not None and values["subnet"] != address.network:
            self.report(INVALID_VALUE, one["subnet"].args[0].span,
                        f"subnet {values['subnet']} disagrees with the address "
                        f"{address} (network {address.network})",
                        "drop `subnet`: a network with an address takes its subnet from it")
            ok = False
        for keyword in ("dns", "domain"):
            asked = keyword in one and (keyword != "dns" or bool(values.get("dns")))
            if asked and address is None and mode not in (Mode.EXTERNAL, Mode.BRIDGED):
                self.report(INVALID_VALUE, one[keyword].span,
                            f"network `{name}` has `{keyword}` but no `address` for the DNS server",
                            "add `address IP/PREFIX`: libvirt's dnsmasq answers on it")
                ok = False
        if dhcp is not None and address is None and mode is not Mode.BRIDGED:
            self.report(INVALID_VALUE, one["dhcp"].span,
                        f"network `{name}` has DHCP but no `address` for the DHCP server",
                        "add `address IP/PREFIX`: libvirt's dnsmasq listens on it")
            ok = False
        if "vni" in one and not extra_hosts:
            self.report(INVALID_VALUE, one["vni"].span,
                        f"`vni` applies to a network on several hosts; `{name}` is on one",
                        f"remove `vni`, or put `{name}` on several hosts (`on kvm1, kvm2`)")
            ok = False
        if not ok:
            return
        vni = mtu = None
        if extra_hosts:
            vni = values.get("vni") or naming.derived_vni(self.lab_or_placeholder(), name)
            # The VXLAN header costs 50 bytes of the underlay's 1500 (topoc.checks.spanning
            # warns about a written MTU that leaves no room for it).
            mtu = values.get("mtu") or VXLAN_DEFAULT_MTU
        bridge = values.get("bridge")
        derived = False
        if bridge is None and mode is not Mode.EXTERNAL:
            bridge, derived = naming.derived_bridge(self.lab_or_placeholder(), name), True
        self.networks.append(Network(
            name=name, host=host, mode=mode, via=via, bridge=bridge, bridge_derived=derived,  # type: ignore[arg-type]
            address=address, declared_subnet=values.get("subnet"), dhcp=dhcp,  # type: ignore[arg-type]
            dns=bool(values.get("dns", False)), domain=values.get("domain"),  # type: ignore[arg-type]
            mtu=mtu or values.get("mtu"), stp=bool(values.get("stp", False)), span=block.span,  # type: ignore[arg-type]
            mode_span=mode_stmt.span,
            address_span=one["address"].args[0].span if "address" in one else block.name.span,
            bridge_span=one["bridge"].args[0].span if "bridge" in one else block.name.span,
            subnet_span=one["subnet"].args[0].span if "subnet" in one else block.name.span,
            extra_hosts=extra_hosts, vni=vni,  # type: ignore[arg-type]
            vni_span=one["vni"].args[0].span if "vni" in one else block.name.span,
            exact_name=exact_name, exact_name_span=exact_span,
        ))

    def on_hosts(self, block: Block) -> tuple[Token, ...] | None:
        """The hosts of `on H1, H2, ...`: names joined by commas, each once."""
        hosts = block.on_hosts
        written = " ".join(t.text for t in block.header[3:])
        if not hosts or not re.fullmatch(r"[^,\s]+(\s*,\s*[^,\s]+)*", written):
            self.report(INVALID_VALUE, block.on.span if block.on is not None else block.name.span,
                        f"`on {written}` is not a list of hosts",
                        "separate the hosts with commas: `on kvm1, kvm2`")
            return None
        seen: set[str] = set()
        for tok in hosts:
            if tok.text in seen:
                self.report(DUPLICATE_NAME, tok.span, f"host `{tok.text}` is named twice after `on`",
                            "name each host once")
                return None
            seen.add(tok.text)
        return hosts

    def lab_or_placeholder(self) -> str:
        return self.lab_name or "lab"

    @staticmethod
    def domain(tok: Token) -> str:
        if not DOMAIN_RE.fullmatch(tok.text):
            raise _Invalid(tok.span, f"`{tok.text}` is not a DNS domain name", "use e.g. lab.example")
        return tok.text

    @staticmethod
    def mode(stmt: Statement) -> tuple[Mode, str | None]:
        word = stmt.args[0]
        if word.text not in MODE_WORDS:
            raise _Invalid(word.span, f"`{word.text}` is not a network mode",
                           _suggest(word.text, MODE_WORDS) or f"use one of {', '.join(MODE_WORDS)}")
        mode = Mode(word.text)
        link = stmt.args[1] if len(stmt.args) > 1 else None
        target = stmt.args[2] if len(stmt.args) > 2 else None
        if mode is Mode.BRIDGED:
            if link is None or link.text != "to":
                raise _Invalid(stmt.span, "a bridged network needs the host NIC it bridges",
                               "write `mode bridged to IFACE`, e.g. `mode bridged to eth0`")
            return mode, _ifname(target)  # type: ignore[arg-type]
        if link is None:
            return mode, None
        if mode in (Mode.NAT, Mode.ROUTED, Mode.OPEN) and link.text == "via":
            return mode, _ifname(target)  # type: ignore[arg-type]
        allowed = "`via IFACE`" if mode in (Mode.NAT, Mode.ROUTED, Mode.OPEN) else "nothing"
        raise _Invalid(link.span, f"mode {mode.value} does not take `{link.text}`",
                       f"mode {mode.value} takes {allowed} after it")

    def dhcp(self, stmt: Statement) -> DhcpRange:
        args = [a for a in stmt.args if a.kind != "-"]
        if len(args) == 1:
            # `dhcp A-B` without spaces lexes as one word.
            first, sep, last = args[0].text.partition("-")
            if not sep:
                raise _Invalid(args[0].span, "a DHCP range needs a first and a last address",
                               "write `dhcp FIRST - LAST`")
            start_tok = Token(first, "WORD", args[0].span.sub(0, len(first)))
            end_tok = Token(last, "WORD", args[0].span.sub(len(first) + 1, len(last)))
        else:
            start_tok, end_tok = args
        return DhcpRange(_address(start_tok), _address(end_tok), stmt.span)

    def host(self, block: Block) -> None:
        if not self.declare(self.node_names, block.name, block.kind):
            return
        one = self.single_statements(block)
        connect = self.connect_uri(one["connect"]) if "connect" in one else None
        pending, routes = self.node_parts(block)
        for p in pending:
            if p is not None and p.iface is None:
                self.report(INVALID_VALUE, p.stmt.tokens[0].span, "a host nic needs its interface name",
                            "write `nic IFACE on NETWORK address IP`, e.g. `nic eth0 on lan ...`")
            elif p is not None and p.address is None:
                self.report(MISSING_STATEMENT, p.stmt.span,
                            f"nic {p.iface} of host `{block.name.text}` has no address",
                            "add `address IP` (the host's address on that network)")
        self.pending_nodes.append(("host", block, pending, routes, connect))

    def connect_uri(self, stmt: Statement) -> tuple[str, Span] | None:
        """`connect URI`: a libvirt URI (topoc.model.uri says what makes one)."""
        from topoc.model.uri import UriError, parse_uri, unknown_parameter_hint

        tok = stmt.args[0]
        text = _string(tok)
        try:
            uri = parse_uri(text)
        except UriError as e:
            self.report(INVALID_VALUE, tok.span, e.message, e.hint)
            return None
        for name in uri.unknown_params:
            self.report(UNKNOWN_URI_PARAMETER, tok.span,
                        f"libvirt does not know the URI parameter `{name}`",
                        unknown_parameter_hint(uri))
        return text, tok.span

    def vm(self, block: Block) -> None:
        if not self.declare(self.node_names, block.name, block.kind):
            return
        one = self.single_statements(block)
        memory = DEFAULT_MEMORY
        if "memory" in one:
            memory = self.attempt(lambda: _size(one["memory"].args[0]))  # type: ignore[assignment]
        vcpus = 1
        if "vcpus" in one:
            vcpus = self.attempt(lambda: _integer(one["vcpus"].args[0], "vCPU count", 1, 4096))  # type: ignore[assignment]
        disk = None
        if "disk" in one:
            disk = self.attempt(lambda: _path(one["disk"].args[0], "disk",
                                              f"disk /var/lib/libvirt/images/{block.name.text}.qcow2",
                                              "the image's"))
            if disk is None:
                memory = None  # type: ignore[assignment]
        boot = self.vm_boot(block, one)
        login = self.vm_login(block, one)
        if boot is None or login is None:
            memory = None  # type: ignore[assignment]
        exact = self.attempt(lambda: _exact_name_of(one))
        if exact is None:
            memory = None  # type: ignore[assignment]
        if block.on is not None:
            self.host_refs.append(block.on)
            if len(block.header) > 4 or "," in block.on.text:
                self.report(INVALID_VALUE, block.on.span,
                            f"vm `{block.name.text}` runs on one host",
                            "name one host after `on`; its nics may join networks on several hosts")
                memory = None  # type: ignore[assignment]
        pending, routes = self.node_parts(block)
        # Even a VM with a bad value goes on, so its nics' names are resolved and reported.
        self.pending_nodes.append(("vm", block, pending, routes, memory, vcpus, disk, exact,
                                   {**(boot or {}), **(login or {})}))

    def vm_boot(self, block: Block, one: dict[str, Statement]) -> dict[str, object] | None:
        """`image`, `kernel`, `initrd`, `cmdline`: how topoc boots the guest (None: an error
        was reported). https://libvirt.org/formatdomain.html#direct-kernel-boot"""
        found: dict[str, object] = {}
        ok = True
        examples = {"image": "/var/lib/libvirt/images/debian-12.qcow2",
                    "kernel": "/var/lib/libvirt/boot/vmlinuz", "initrd": "/var/lib/libvirt/boot/initrd.img"}
        for key, example in examples.items():
            if key in one:
                tok = one[key].args[0]
                path = self.attempt(lambda: _absolute_path(tok, key, f"{key} {example}"))
                ok = ok and path is not None
                found[key], found[f"{key}_span"] = path, one[key].span
        if "cmdline" in one:
            text = _string(one["cmdline"].args[0])
            if any(ord(c) < 32 for c in text):
                self.report(INVALID_VALUE, one["cmdline"].args[0].span,
                            "the kernel command line contains a control character", "remove it")
                ok = False
            found["cmdline"] = text
        if "image" in one and "disk" in one:
            first, second = sorted((one["image"], one["disk"]), key=lambda s: s.span)
            self.report(CONFLICTING_STATEMENTS, second.span,
                        f"vm `{block.name.text}` has both `image` and `disk` (line {first.span.line})",
                        "keep `image` for a base image topoc overlays (never written), or `disk` "
                        "for a disk you manage yourself that the VM writes to")
            ok = False
        for key in ("initrd", "cmdline"):
            if key in one and "kernel" not in one:
                self.report(MISSING_STATEMENT, one[key].span,
                            f"`{key}` is for a direct kernel boot, and vm `{block.name.text}` has no `kernel`",
                            f"add `kernel PATH` (the kernel to boot{' with this initrd' if key == 'initrd' else ''}), "
                            f"or remove `{key}`")
                ok = False
        return found if ok else None

    def vm_login(self, block: Block, one: dict[str, Statement]) -> dict[str, object] | None:
        """`user`, `ssh-key`, `ssh-key-file`: who may log in to the guest (cloud-init)."""
        found: dict[str, object] = {}
        ok = True
        if "user" in one:
            tok = one["user"].args[0]
            if USER_RE.fullmatch(tok.text) and tok.text != "root":
                found["user"] = tok.text
            else:
                why = ("`root` is the image's own account; cloud-init creates a new one here"
                       if tok.text == "root" else "user names are lower-case letters, digits, `_` and `-`, "
                       "starting with a letter or `_`, at most 32 characters (useradd(8))")
                self.report(INVALID_VALUE, tok.span, f"`{tok.text}` is not a user name topoc can create", why)
                ok = False
        keys: list[str] = []
        for stmt in block.body:
            if stmt.kind == "ssh-key":
                key = self.attempt(lambda: _ssh_key(_string(stmt.args[0]), stmt.args[0].span))
            elif stmt.kind == "ssh-key-file":
                key = self.attempt(lambda: self.ssh_key_file(stmt.args[0]))
            else:
                continue
            if key is None:
                ok = False
            elif key not in keys:
                keys.append(key)  # type: ignore[arg-type]
        found["ssh_keys"] = tuple(keys)
        return found if ok else None

    def ssh_key_file(self, tok: Token) -> str:
        """The key in a .pub file. Read here, like the .topo itself, so that the IR holds
        the key and every backend stays pure; a relative path is the .topo file's."""
        written = _string(tok)
        path = os.path.expanduser(written)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(self.tree.file), path)
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line for line in f.read().splitlines() if line.strip() and not line.startswith("#")]
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
            raise _Invalid(tok.span, f"cannot read the SSH key file `{written}`: {reason}",
                           "give the path of a public key (.pub), or paste it with `ssh-key \"...\"`") from None
        if len(lines) != 1:
            raise _Invalid(tok.span, f"`{written}` holds {len(lines)} keys; `ssh-key-file` takes a file with one",
                           "give one .pub file per `ssh-key-file` line")
        return _ssh_key(lines[0], tok.span)

    def external(self, block: Block) -> None:
        if not self.declare(self.node_names, block.name, block.kind):
            return
        self.single_statements(block)
        pending, routes = self.node_parts(block)
        for p in pending:
            if p is not None and p.address is None:
                self.report(MISSING_STATEMENT, p.stmt.span,
                            f"nic of external `{block.name.text}` has no address",
                            "add `address IP`: topoc does not model DHCP outside the host")
        self.pending_nodes.append(("external", block, pending, routes))

    def forward(self, stmt: Statement) -> None:
        proto_tok, port_tok, _, target_tok = stmt.args

        def protocol() -> str:
            if proto_tok.text not in ("tcp", "udp"):
                raise _Invalid(proto_tok.span, f"`{proto_tok.text}` is not a protocol",
                               "use `tcp` or `udp`")
            return proto_tok.text

        def target() -> tuple[str, int]:
            vm_name, sep, vm_port_text = target_tok.text.rpartition(":")
            if not sep or not vm_name:
                raise _Invalid(target_tok.span, f"`{target_tok.text}` is not VM:PORT",
                               f"write the VM and its port, e.g. `{target_tok.text}:{port_tok.text}`")
            port_span = target_tok.span.sub(len(vm_name) + 1, len(vm_port_text))
            return vm_name, _integer(Token(vm_port_text, "WORD", port_span), "port", 1, 65535)

        # Each part is checked on its own, so one line can report all its mistakes.
        proto = self.attempt(protocol)
        port = self.attempt(lambda: _integer(port_tok, "port", 1, 65535))
        vm_and_port = self.attempt(target)
        if proto is not None and port is not None and vm_and_port is not None:
            vm_name, vm_port = vm_and_port  # type: ignore[misc]
            self.forwards.append((stmt, Forward(proto, port, vm_name, vm_port, stmt.span)))  # type: ignore[arg-type]

    def expect(self, stmt: Statement) -> None:
        src, arrow, dst = stmt.args
        self.expects.append(Expect(src.text, dst.text, arrow.kind == "->", stmt.span, src.span, dst.span))

    # -- the whole file --

    def run(self) -> Lab | None:
        labs = [i for i in self.tree.items if isinstance(i, Statement) and i.kind == "lab"]
        for stmt in labs:
            if self.lab_name is not None:
                self.report(DUPLICATE_STATEMENT, stmt.span,
                            f"the lab is already named `{self.lab_name}` (line {self.lab_span.line})",  # type: ignore[union-attr]
                            "a file describes one lab: keep one `lab` line")
                continue
            name = self.attempt(lambda: _name(stmt.args[0], "lab"))
            if name is not None:
                self.lab_name, self.lab_span = name, stmt.span  # type: ignore[assignment]
        if self.lab_name is None and not labs:
            self.report(MISSING_STATEMENT, Span(self.tree.file, 1, 1, 1, 2), "the file names no lab",
                        "add `lab NAME` at the top: it prefixes every object topoc creates")
        self.host_block_names = [i.name.text for i in self.tree.items
                                 if isinstance(i, Block) and i.kind == "host"]
        handlers = {"network": self.network, "host": self.host, "vm": self.vm,
                    "external": self.external, "forward": self.forward, "expect": self.expect}
        for item in self.tree.items:
            if item.kind in handlers:
                handlers[item.kind](item)  # type: ignore[arg-type]
        self.resolve_nodes()
        self.resolve_references()
        if any(d.severity is Severity.ERROR for d in self.diagnostics):
            return None
        self.derive_macs()
        return Lab(
            name=self.lab_name or "lab", file=self.tree.file, networks=tuple(self.networks),
            hosts=tuple(self.hosts), vms=tuple(self.vms), externals=tuple(self.externals),
            forwards=tuple(f for _, f in self.forwards), expects=tuple(self.expects),
            span=self.lab_span or Span(self.tree.file, 1, 1, 1, 2),
        )

    def resolve_nodes(self) -> None:
        """Build nics now that every network is known (names may be used before definition)."""
        by_name = {n.name: n for n in self.networks}
        for entry in self.pending_nodes:
            kind, block, pending, routes = entry[:4]
            nics = tuple(self.finish_nic(p, by_name) for p in pending if p is not None)
            if len(nics) != sum(p is not None for p in pending) or None in nics:
                continue
            name = block.name.text
            if kind == "host":
                connect, connect_span = entry[4] or (None, UNKNOWN)
                self.hosts.append(Host(name, nics, routes, block.span, connect, connect_span))  # type: ignore[arg-type]
            elif kind == "external":
                self.externals.append(External(name, nics, routes, block.span))  # type: ignore[arg-type]
            else:
                memory, vcpus, disk, exact, guest = entry[4:]
                host = block.on.text if block.on is not None else self.only_host(block)
                if host is not None and memory is not None and vcpus is not None:
                    exact_name, exact_span = exact
                    self.vms.append(Vm(name, host, memory, vcpus, disk, nics, routes, block.span,  # type: ignore[arg-type]
                                       exact_name=exact_name, exact_name_span=exact_span, **guest))

    def only_host(self, block: Block) -> str | None:
        """The host of a VM that names none: the only host, when there is exactly one."""
        hosts = self.host_block_names
        if len(hosts) == 1:
            return hosts[0]
        vm = block.name.text
        if hosts:
            hint = f"write e.g. `vm {vm} on {hosts[0]} {{` (the hosts: {', '.join(hosts)})"
        else:
            hint = f"write `vm {vm} on HOST {{` and define the host with `host HOST {{ ... }}`"
        self.report(MISSING_STATEMENT, block.name.span,
                    f"vm `{vm}` does not say which host it runs on", hint)
        return None

    def finish_nic(self, p: _Pending, networks: dict[str, Network]) -> Nic | None:
        network = networks.get(p.network.text)
        if network is None:
            if p.network.text not in self.network_names:  # else it failed and was reported
                self.report(UNDEFINED_NAME, p.network.span, f"no network is named `{p.network.text}`",
                            _name_hint(p.network.text, self.network_names, "networks",
                                       "define it with `network NAME { ... }`"))
            return None
        address = None
        if p.address is not None:
            address = self.attempt(lambda: self.nic_address(p.address, network))  # type: ignore[arg-type]
            if address is None:
                return None
        return Nic(p.owner, p.index, p.iface or f"eth{p.index}", network.name, address,  # type: ignore[arg-type]
                   p.mac, False, p.model, p.gateway, p.stmt.span,
                   *(p.options[k].span if k in p.options else UNKNOWN
                     for k in ("address", "mac", "gateway")))

    @staticmethod
    def nic_address(tok: Token, network: Network) -> IPv4Interface:
        if "/" in tok.text:
            return _interface(tok)
        ip = _address(tok)
        if network.subnet is None:
            raise _Invalid(tok.span, f"{ip} has no prefix and network `{network.name}` has no "
                           "address or subnet to take one from",
                           f"write the prefix, e.g. `{ip}/24`, or give `{network.name}` a subnet")
        return IPv4Interface(f"{ip}/{network.subnet.prefixlen}")

    def resolve_references(self) -> None:
        host_blocks = set(self.host_block_names)
        for tok in self.host_refs:
            if tok.text in self.node_kinds and tok.text not in host_blocks:
                self.report(UNDEFINED_NAME, tok.span,
                            f"`{tok.text}` is {_A_KIND[self.node_kinds[tok.text]]}, not a host",
                            _name_hint("", host_blocks, "hosts", "define one with `host NAME { ... }`"))
            elif tok.text not in host_blocks:
                self.report(UNDEFINED_NAME, tok.span, f"no host is named `{tok.text}`",
                            _name_hint(tok.text, host_blocks, "hosts", "define it with `host NAME { ... }`"))
        # A managed network with no `on` runs on the only host, when there is exactly one.
        for i, net in enumerate(self.networks):
            if net.managed and net.host is None:
                if len(host_blocks) == 1:
                    self.networks[i] = replace(net, host=next(iter(host_blocks)))
                else:
                    hosts = self.host_block_names
                    hint = (f"write e.g. `network {net.name} on {hosts[0]} {{` (the hosts: "
                            f"{', '.join(hosts)})") if hosts else \
                        f"write `network {net.name} on HOST {{` and define the host with `host HOST {{ ... }}`"
                    self.report(MISSING_STATEMENT, net.span.sub(0, len("network")),
                                f"network `{net.name}` does not say which host it is on", hint)
        # Every VM declared, even one whose values failed (reported already), so a
        # forward to it is not called undefined on top of that.
        vm_names = {name for name, kind in self.node_kinds.items() if kind == "vm"}
        node_names = set(self.node_names)
        for stmt, fwd in self.forwards:
            target = stmt.args[3]
            if fwd.vm in self.node_kinds and fwd.vm not in vm_names:
                self.report(UNDEFINED_NAME, target.span.sub(0, len(fwd.vm)),
                            f"`{fwd.vm}` is {_A_KIND[self.node_kinds[fwd.vm]]}, not a VM: a forward leads to a VM",
                            _name_hint("", vm_names, "VMs", "define one with `vm NAME on HOST { ... }`"))
            elif fwd.vm not in vm_names:
                self.report(UNDEFINED_NAME, target.span.sub(0, len(fwd.vm)),
                            f"no VM is named `{fwd.vm}`",
                            _name_hint(fwd.vm, vm_names, "VMs", "define it with `vm NAME on HOST { ... }`"))
        for exp in self.expects:
            for name, span in ((exp.src, exp.src_span), (exp.dst, exp.dst_span)):
                if name in node_names:
                    continue
                try:
                    IPv4Address(name)
                except AddressValueError:
                    if re.fullmatch(r"[0-9.]+", name):
                        self.report(INVALID_VALUE, span, f"`{name}` is not an IPv4 address",
                                    "write four numbers 0-255 joined by dots, e.g. 10.0.0.1")
                        continue
                    if name in self.network_names:
                        self.report(UNDEFINED_NAME, span,
                                    f"`{name}` is a network; `expect` takes nodes and addresses",
                                    "name a host, VM or external on it, or an address in it")
                        continue
                    self.report(UNDEFINED_NAME, span, f"`{name}` is neither a node nor an IPv4 address",
                                _name_hint(name, node_names, "nodes",
                                           "give an IPv4 address, or define a host, VM or external"))

    def derive_macs(self) -> None:
        """Give every VM nic a MAC: written ones stay; the others are derived from the lab,
        VM and nic, stepping past any MAC already taken (deterministic: VMs in name order)."""
        taken = {nic.mac for vm in self.vms for nic in vm.nics if nic.mac is not None}
        lab = self.lab_or_placeholder()
        derived: dict[tuple[str, int], str] = {}
        for vm in sorted(self.vms, key=lambda v: v.name):
            for nic in vm.nics:
                if nic.mac is None:
                    attempt = 0
                    mac = naming.derived_mac(lab, vm.name, nic.index)
                    while mac in taken:
                        attempt += 1
                        mac = naming.derived_mac(lab, vm.name, nic.index, attempt)
                    taken.add(mac)
                    derived[(vm.name, nic.index)] = mac
        self.vms = [
            replace(vm, nics=tuple(
                replace(nic, mac=derived[(vm.name, nic.index)], mac_derived=True)
                if (vm.name, nic.index) in derived else nic
                for nic in vm.nics))
            for vm in self.vms
        ]


def lower(tree: SyntaxTree) -> tuple[Lab | None, list[Diagnostic]]:
    """Lower a syntax tree. The lab is None when any error was found."""
    lowerer = _Lowerer(tree)
    lab = lowerer.run()
    return lab, lowerer.diagnostics
