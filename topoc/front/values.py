"""Value parsers: one token's text -> one typed value, or `Invalid` saying what is wrong.

Each parser knows one kind of value (a name, an interface name, an IP address of either
family, a CIDR, a size, a MAC, a switch, a port...) and nothing about the lab: resolving names
against what the file defines is topoc.front.lower's job. An `Invalid` becomes one
diagnostic pointing at the token (or the part of it) at fault.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from ipaddress import ip_interface

from topoc.diagnostics import INVALID_VALUE, MAC_INVALID, Code
from topoc.front.span import Span
from topoc.front.syntax import Token
from topoc.model import naming
from topoc.model.family import IPAddress, IPInterface, IPNetwork, family_of, family_of_text, parse_address
from topoc.model.ir import DhcpRange, Mode

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
MAX_MEMORY = 16 * 1024**4

MODE_WORDS = [m.value for m in Mode]
ROUTING_MODES = (Mode.NAT, Mode.ROUTED, Mode.OPEN)  # the modes that take `via IFACE`


class Invalid(Exception):
    """A value that cannot be lowered; caught per statement and made a diagnostic."""

    def __init__(self, span: Span, message: str, hint: str | None = None,
                 code: Code = INVALID_VALUE) -> None:
        super().__init__(message)
        self.span, self.message, self.hint, self.code = span, message, hint, code

    @classmethod
    def of(cls, span: Span, key: str, code: Code = INVALID_VALUE, **values: object) -> Invalid:
        """The code's message `key` and its hint `key_hint` (templates in topoc.codes)."""
        return cls(span, code.message(key, **values), code.message(f"{key}_hint", **values), code)


def suggest(word: str, choices: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


def name(tok: Token, what: str) -> str:
    if tok.kind != "WORD" or not NAME_RE.fullmatch(tok.text):
        raise Invalid.of(tok.span, "not_name", text=tok.text, what=what)
    return tok.text


def ifname(tok: Token, what: str = "interface") -> str:
    """An interface name; the one place the kernel's IFNAMSIZ limit is enforced."""
    if tok.kind != "WORD" or not IFNAME_RE.fullmatch(tok.text):
        raise Invalid.of(tok.span, "not_ifname", text=tok.text, what=what)
    if len(tok.text) > naming.IFNAMSIZ:
        raise Invalid.of(tok.span, "ifname_too_long", text=tok.text, what=what, length=len(tok.text),
                         limit=naming.IFNAMSIZ)
    return tok.text


def address(tok: Token) -> IPAddress:
    """An IPv4 or IPv6 address (no prefix, no IPv6 zone)."""
    found = parse_address(tok.text)
    if found is None:
        raise Invalid.of(tok.span, why_not_address(tok.text), text=tok.text,
                         address=tok.text.split("/")[0].partition("%")[0]) from None
    return found


def why_not_address(text: str) -> str:
    """The message key that says why `text` is not an address."""
    bare = text.split("/")[0]
    if "/" in text and parse_address(bare) is not None:
        return "prefix_on_address"
    if "%" in text and (unzoned := parse_address(bare.partition("%")[0])) is not None:
        return "ipv6_zone_link_local" if unzoned.is_link_local else "ipv6_zone"
    return "not_ipv6" if family_of_text(text).facts.version == 6 else "not_ipv4"


def interface(tok: Token) -> IPInterface:
    """`IP/PREFIX` of either family (the prefix is required here)."""
    text = tok.text
    if "/" not in text:
        raise Invalid.of(tok.span, "no_prefix", text=text,
                         example=f"{text}/{64 if family_of_text(text).facts.version == 6 else 24}")
    ip_text, _, prefix = text.partition("/")
    ip = address(Token(ip_text, "WORD", tok.span))
    longest = family_of(ip).facts.max_prefix
    if digits(prefix, longest) is None:
        raise Invalid.of(tok.span.sub(len(ip_text), len(prefix) + 1), "bad_prefix", prefix=shown(prefix),
                         longest=longest)
    return ip_interface(f"{ip}/{int(prefix)}")


def nic_address_form(tok: Token) -> IPAddress | IPInterface:
    """A nic's `address`: IP or IP/PREFIX (the prefix, when left out, is the network's)."""
    return interface(tok) if "/" in tok.text else address(tok)


def network_cidr(tok: Token) -> IPNetwork:
    iface = interface(tok)
    if iface.ip != iface.network.network_address:
        raise Invalid.of(tok.span, "host_bits", text=tok.text, network=iface.network)
    return iface.network


def destination(tok: Token, via: IPAddress) -> IPNetwork:
    """A route's destination: a CIDR, or `default` (in the family of its `via`)."""
    return family_of(via).default_route if tok.text == "default" else network_cidr(tok)


def digits(text: str, limit: int) -> int | None:
    """The value of a string of ASCII digits, or None when it is not one or exceeds
    `limit`. The one place the front end turns digits into a number: the length is
    checked before int(), which refuses (with a ValueError) strings of more than
    4,300 digits (https://docs.python.org/3/library/stdtypes.html#int-max-str-digits),
    and str.isdigit() alone would pass superscripts, which int() refuses too."""
    if not text.isascii() or not text.isdigit():
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(limit)):
        return None
    value = int(significant or "0")
    return value if value <= limit else None


def shown(text: str) -> str:
    """A value as a message quotes it: whole, unless it is too long to read."""
    return text if len(text) <= 40 else f"{text[:20]}...({len(text):,} characters)"


def integer(tok: Token, what: str, low: int, high: int) -> int:
    value = digits(tok.text, high)
    if value is None or value < low:
        raise Invalid.of(tok.span, "not_integer", text=shown(tok.text), what=what, low=low, high=high)
    return value


def switch(tok: Token, what: str) -> bool:
    if tok.text not in ("on", "off"):
        raise Invalid.of(tok.span, "not_switch", text=tok.text, what=what)
    return tok.text == "on"


def size(tok: Token) -> int:
    match = SIZE_RE.fullmatch(tok.text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise Invalid.of(tok.span, "no_unit" if tok.text.isdigit() else "not_size", text=tok.text)
    count = digits(match.group(1), MAX_MEMORY)
    value = count * _UNITS[unit] if count is not None else None
    if value is None or not 1024**2 <= value <= MAX_MEMORY:
        raise Invalid.of(tok.span, "size_range", text=shown(tok.text))
    return value


def mac(tok: Token) -> str:
    if not MAC_RE.fullmatch(tok.text):
        raise Invalid.of(tok.span, "not_mac", MAC_INVALID, text=tok.text)
    return tok.text.lower().replace("-", ":")


def model(tok: Token) -> str:
    if not MODEL_RE.fullmatch(tok.text):
        raise Invalid.of(tok.span, "not_model", text=tok.text)
    return tok.text


def string(tok: Token) -> str:
    if tok.kind == "STRING":
        body = tok.text[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    return tok.text


def domain(tok: Token) -> str:
    if not DOMAIN_RE.fullmatch(tok.text):
        raise Invalid.of(tok.span, "not_domain", text=tok.text)
    return tok.text


def exact_name(tok: Token) -> str:
    """`name NAME`: a network's or VM's libvirt name as is (topoc.model.naming's rule)."""
    problem = naming.exact_name_problem(tok.text)
    if problem is not None:
        raise Invalid.of(tok.span, "not_exact_name", text=tok.text, problem=problem)
    return tok.text


def protocol(tok: Token) -> str:
    if tok.text not in ("tcp", "udp"):
        raise Invalid.of(tok.span, "not_protocol", text=tok.text)
    return tok.text


def vm_port(tok: Token, port_text: str) -> tuple[str, int]:
    """`VM:PORT` of a forward (`port_text` is the host port, for the hint)."""
    vm_name, sep, vm_port_text = tok.text.rpartition(":")
    if not sep or not vm_name:
        raise Invalid.of(tok.span, "not_vm_port", text=tok.text, port=port_text)
    port_span = tok.span.sub(len(vm_name) + 1, len(vm_port_text))
    return vm_name, integer(Token(vm_port_text, "WORD", port_span), "port", 1, 65535)


def mode(word: Token, link: Token | None, target: Token | None, span: Span) -> tuple[Mode, str | None]:
    """`mode WORD [via|to IFACE]` -> the mode and its interface (`link` is `via` or `to`)."""
    if word.text not in MODE_WORDS:
        problem = Invalid.of(word.span, "not_mode", text=word.text, modes=", ".join(MODE_WORDS))
        problem.hint = suggest(word.text, MODE_WORDS) or problem.hint
        raise problem
    value = Mode(word.text)
    if value is Mode.BRIDGED:
        if link is None or link.text != "to" or target is None:
            raise Invalid.of(span, "bridged_needs_nic")
        return value, ifname(target)
    if link is None or target is None:
        return value, None
    if value in ROUTING_MODES and link.text == "via":
        return value, ifname(target)
    allowed = "`via IFACE`" if value in ROUTING_MODES else "nothing"
    raise Invalid.of(link.span, "mode_option", mode=value.value, text=link.text, allowed=allowed)


def dhcp_range(words: tuple[Token, ...], span: Span) -> DhcpRange:
    """`FIRST - LAST` (or `FIRST-LAST`, which lexes as one word)."""
    if len(words) == 1:
        first, sep, last = words[0].text.partition("-")
        if not sep:
            raise Invalid.of(words[0].span, "dhcp_needs_two")
        start_tok = Token(first, "WORD", words[0].span.sub(0, len(first)))
        end_tok = Token(last, "WORD", words[0].span.sub(len(first) + 1, len(last)))
    else:
        start_tok, end_tok = words
    start, end = address(start_tok), address(end_tok)
    if start.version != end.version:
        raise Invalid.of(span, "dhcp_mixed", first=family_of(start).title, last=family_of(end).title)
    return DhcpRange(start, end, span)
