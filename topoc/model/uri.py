"""libvirt connection URIs: parse and validate one, and say what it means for topoc
(which host it reaches, over which transport), without opening anything.

The format is libvirt's (https://libvirt.org/uri.html, "Remote URIs"):

    driver[+transport]://[username@][hostname][:port]/[path][?extraparameters]

The transport is one of tls, tcp, unix, ssh, libssh, libssh2 or ext; without one it is
tls when a hostname is given and unix (the local daemon) otherwise. The extra
parameters are `name=value` pairs joined by `&`; libvirt ignores names it does not know,
which is how a misspelt `keyfile` goes unnoticed, so topoc warns about them. A local
URI (no hostname, or the unix transport) reaches this machine's daemon; `test:///...`
is libvirt's in-process test driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

# https://libvirt.org/uri.html: the remote driver's transports.
TRANSPORTS = ("tls", "tcp", "unix", "ssh", "libssh", "libssh2", "ext")
# https://libvirt.org/uri.html#extra-parameters: the names the remote driver reads.
EXTRA_PARAMETERS = ("name", "tls_priority", "mode", "proxy", "command", "socket", "netcat",
                    "keyfile", "no_verify", "no_tty", "pkipath", "known_hosts",
                    "known_hosts_verify", "sshauth")
# The transports that reach the other machine through ssh (user, host, port, keyfile).
SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
_DRIVER_RE = re.compile(r"[a-z][a-z0-9]*\Z")


class UriError(ValueError):
    """The text is not a libvirt URI; `hint` says how to write one."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class LibvirtUri:
    text: str
    driver: str  # qemu, test, lxc, ...
    transport: str | None  # as written; None when left out
    user: str | None
    hostname: str | None
    port: int | None
    path: str
    params: tuple[tuple[str, str], ...] = ()
    unknown_params: tuple[str, ...] = field(default=(), compare=False)

    @property
    def local(self) -> bool:
        """Whether the URI reaches this machine's own daemon (or the in-process test
        driver): no hostname, or the unix transport."""
        return self.hostname is None or self.transport == "unix"

    @property
    def ssh(self) -> bool:
        return self.transport in SSH_TRANSPORTS and not self.local

    @property
    def test_driver(self) -> bool:
        return self.driver == "test" and self.local

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.params if key == name), None)

    @property
    def keyfile(self) -> str | None:
        return self.param("keyfile")

    @property
    def socket(self) -> str | None:
        return self.param("socket")

    def __str__(self) -> str:
        return self.text


def parse_uri(text: str) -> LibvirtUri:
    """The URI's parts, or UriError with a message and a hint."""
    example = "e.g. qemu:///system or qemu+ssh://root@192.168.101.12/system"
    if not text or any(c.isspace() for c in text):
        raise UriError(f"`{text}` is not a libvirt URI: it is empty or holds a space",
                       f"write driver[+transport]://[user@][host][:port]/path, {example}")
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise UriError(f"`{text}` is not a libvirt URI: it has no `://`",
                       f"write driver[+transport]://[user@][host][:port]/path, {example}")
    driver, plus, transport = scheme.partition("+")
    if not _DRIVER_RE.match(driver):
        raise UriError(f"`{driver}` in `{text}` is not a libvirt driver name",
                       f"start with the driver (qemu, test, lxc, ...), {example}")
    if plus and transport not in TRANSPORTS:
        raise UriError(f"`{transport}` in `{text}` is not a libvirt transport",
                       f"use one of {', '.join(TRANSPORTS)} (https://libvirt.org/uri.html)")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:  # a port that is no number, or out of range
        raise UriError(f"`{text}` is not a libvirt URI: {e}",
                       "write the port as a number 1-65535 after the host, e.g. host:2222") from None
    if parts.fragment:
        raise UriError(f"`{text}` has a `#` part, which libvirt URIs do not have",
                       "remove everything from `#` on")
    hostname = parts.hostname or None
    if hostname is None and (parts.username or port is not None):
        raise UriError(f"`{text}` gives a user or port but no host",
                       "write the host after the user, e.g. qemu+ssh://root@kvm2/system")
    if transport in SSH_TRANSPORTS + ("tcp", "tls") and hostname is None:
        raise UriError(f"`{text}` uses the {transport} transport but names no host",
                       f"write the host, e.g. {driver}+{transport}://root@kvm2/system")
    if port is not None and port == 0:
        raise UriError(f"`{text}`: port 0 is not a port", "write a port 1-65535")
    try:
        params = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise UriError(f"the extra parameters of `{text}` are not name=value pairs joined by &",
                       "write e.g. ?keyfile=/root/.ssh/id_ed25519&no_tty=1") from None
    unknown = tuple(name for name, _ in params if name not in EXTRA_PARAMETERS)
    return LibvirtUri(text, driver, transport or None, unquote(parts.username) if parts.username else None,
                      hostname, port, parts.path, params, unknown)


def unknown_parameter_hint(uri: LibvirtUri) -> str:
    return (f"libvirt ignores parameters it does not know; it reads {', '.join(EXTRA_PARAMETERS)} "
            "(https://libvirt.org/uri.html)")
