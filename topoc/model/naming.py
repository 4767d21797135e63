"""Deterministic names, MACs and UUIDs derived from the lab.

Everything a backend or the verifier must agree on and that the user did not write:
libvirt object names, UUIDs, MAC addresses, bridge and tap names. All are pure
functions of names, so the same input gives byte-identical output on every run and
every machine (no counters, no randomness, no timestamps).
"""

from __future__ import annotations

import hashlib
import re
import uuid

from topoc.model.platform import DEFAULT_PROFILE

# Linux interface names hold at most 15 characters (IFNAMSIZ 16 with the NUL).
IFNAMSIZ = 15

# The OUI libvirt and QEMU use for generated guest MACs (52:54:00 is locally
# administered and unicast): https://libvirt.org/formatdomain.html#mac-address
MAC_PREFIX = "52:54:00"

# A fixed namespace for topoc's name-based UUIDs (uuid5), so UUIDs are stable forever.
TOPOC_NAMESPACE = uuid.UUID("6f0c6a4e-3b1d-5c2e-9a57-70706f63746f")

# Prefixes libvirt gives its own interfaces; a lab's bridges and taps must not use them
# (a fact of the platform: topoc.model.platform).
LIBVIRT_RESERVED_PREFIXES = DEFAULT_PROFILE.reserved_prefixes


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode()).digest()


# An exact libvirt name (`name NAME` in a network or vm block) as topoc accepts it: the
# characters of the names people and virt-install give (`natnet`, `ubuntu22.04`,
# `web_1`, `rhel9-x86_64`), safe unquoted in virsh commands and XML comments. libvirt
# itself refuses only an empty name, `/` (its config files are NAME.xml) and, in a
# domain, a line break ("invalid char in name"); a name must also fit a file name
# (NAME_MAX 255 with `.xml`): https://libvirt.org/formatnetwork.html#general-metadata,
# https://libvirt.org/formatdomain.html#general-metadata
EXACT_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+:@]*(-[A-Za-z0-9_.+:@]+)*")
EXACT_NAME_MAX = 250


def exact_name_problem(name: str) -> str | None:
    """Why `name` cannot be an exact libvirt name, or None when it can."""
    if not EXACT_NAME_RE.fullmatch(name):
        return ("an exact libvirt name starts with a letter, digit or `_` and holds letters, "
                "digits, `_`, `.`, `+`, `:`, `@` and single inner `-`")
    if len(name.encode()) > EXACT_NAME_MAX:
        return f"it is {len(name.encode())} bytes long; libvirt keeps it in a file NAME.xml: at most {EXACT_NAME_MAX}"
    return None


def libvirt_name(lab: str, name: str, exact: str | None = None) -> str:
    """The libvirt name of a lab's network or domain: `natlab-natnet`, never clashing
    with another lab's or with `default`; or, when the block says `name NAME`, that
    name as is (an object that exists already, e.g. one `topoc import` described)."""
    return exact if exact is not None else f"{lab}-{name}"


def object_uuid(lab: str, kind: str, name: str) -> str:
    """A stable UUID for a lab's network or domain (`kind` is "network" or "domain")."""
    return str(uuid.uuid5(TOPOC_NAMESPACE, f"{lab}/{kind}/{name}"))


def derived_mac(lab: str, vm: str, nic_index: int, attempt: int = 0) -> str:
    """A MAC for a VM nic that has none written: 52:54:00 plus three bytes of a hash of
    lab, VM and nic. `attempt` > 0 gives the next candidate when one collides."""
    salt = "" if attempt == 0 else f"#{attempt}"
    tail = _digest("mac", lab, vm, str(nic_index) + salt)[:3]
    return MAC_PREFIX + "".join(f":{b:02x}" for b in tail)


def _short(prefix: str, *parts: str, readable: str) -> str:
    """`prefix + readable` when it fits IFNAMSIZ, else a prefix, a cut of the readable
    part and 4 hex digits of a hash of `parts` (so two long names stay distinct)."""
    name = prefix + readable
    if len(name) <= IFNAMSIZ:
        return name
    tag = _digest(*parts).hex()[:4]
    keep = IFNAMSIZ - len(prefix) - len(tag) - 1
    return f"{prefix}{readable[:keep]}-{tag}"


def derived_bridge(lab: str, network: str) -> str:
    """The bridge of a managed network that names none: `tp-<network>`."""
    return _short("tp-", "bridge", lab, network, readable=network)


def tap_name(lab: str, vm: str, nic_index: int) -> str:
    """The host-side tap of a VM nic in the shell path (`tp<vm>.<n>` style, never
    libvirt's `vnetN`), at most 15 characters."""
    return _short("tt-", "tap", lab, vm, str(nic_index), readable=f"{vm}-{nic_index}")


# VXLAN network identifiers are 24 bits; 0 is left out (https://datatracker.ietf.org/doc/html/rfc7348#section-5).
VNI_MAX = 2**24 - 1


def derived_vni(lab: str, network: str) -> int:
    """The VXLAN network identifier of a network on several hosts that has no `vni`:
    from a hash of lab and network, so it is stable from one build to the next."""
    digest = _digest("vni", lab, network)
    return int.from_bytes(digest[:3], "big") % VNI_MAX + 1


def vxlan_name(vni: int) -> str:
    """The VXLAN link that joins a spanning network's bridges on each host (`tvx` and
    the VNI in hex: at most 9 characters, one per VNI, which the checks keep unique)."""
    return f"tvx{vni:06x}"
