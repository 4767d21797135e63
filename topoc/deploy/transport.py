"""Host-level steps over the connection's own transport: what libvirt cannot do on a
host (VXLAN links, bridges of networks that span hosts, the lab's nft table) runs as
commands on that host, locally for a local URI and through ssh for `qemu+ssh://`.

The ssh command line comes from the URI as libvirt's own ssh transport reads it
(https://libvirt.org/uri.html, "Remote URIs"): user, host and port from the URI's
authority, the private key from `?keyfile=`, the ssh program from `?command=`, and
`no_tty=1`. BatchMode: a host step never asks for a password half-way through a deploy.

Each step is one command and the command that undoes it, run as a step of the deploy's
journal (topoc.deploy.engine.Journal), so a failure later in the deploy, on this host or
another, undoes it the same way as a libvirt call. No libvirt import here.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from topoc.model.uri import LibvirtUri, parse_uri

STEP_TIMEOUT_S = 60.0


class HostCommandError(Exception):
    """A host-level command failed (or its transport did); the message says which."""


class NoTransport(HostCommandError):
    """The URI's transport has no way to run commands on the host (tls, tcp, ext)."""


@dataclass(frozen=True)
class Transport:
    """Where host commands run: `prefix` is prepended to every command line (empty for
    this machine, `ssh ... user@host --` for a remote one)."""

    description: str
    prefix: tuple[str, ...] = ()

    @property
    def remote(self) -> bool:
        return bool(self.prefix)

    def argv(self, command: Sequence[str]) -> list[str]:
        if not self.prefix:
            return list(command)
        # ssh hands the remote shell one string: quote each word so it arrives intact.
        return [*self.prefix, shlex.join(command)]

    def run(self, command: Sequence[str], *, stdin: str | None = None, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        argv = self.argv(command)
        try:
            result = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                    timeout=STEP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise HostCommandError(f"`{shlex.join(command)}` on {self.description}: {e}") from None
        if check and result.returncode != 0:
            why = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
            if self.remote and result.returncode == 255:
                why = f"ssh failed: {why}"
            raise HostCommandError(f"`{shlex.join(command)}` on {self.description} failed: {why}")
        return result


LOCAL = Transport("this machine")


def ssh_prefix(uri: LibvirtUri) -> tuple[str, ...]:
    """The ssh command line libvirt's ssh transport would use for the URI."""
    # `command=`: the ssh program libvirt runs instead of `ssh` (found on PATH).
    argv = [uri.param("command") or "ssh", "-o", "BatchMode=yes"]
    if uri.port is not None:
        argv += ["-p", str(uri.port)]
    if uri.keyfile:
        argv += ["-i", uri.keyfile]
    if uri.param("no_tty"):
        argv += ["-T"]
    target = f"{uri.user}@{uri.hostname}" if uri.user else str(uri.hostname)
    return (*argv, "--", target)


def transport_for(uri_text: str) -> Transport:
    """The transport of a libvirt URI: this machine for a local URI, ssh for the ssh
    transports; NoTransport for the others (tls, tcp, ext), which reach libvirtd but
    give topoc no way to run a command on the host."""
    uri = parse_uri(uri_text)
    if uri.local:
        return LOCAL
    if uri.ssh:
        prefix = ssh_prefix(uri)
        return Transport(f"{uri.hostname} (over ssh)", prefix)
    raise NoTransport(f"{uri_text} reaches libvirtd over {uri.transport or 'tls'}, which runs no "
                      "commands on the host; use qemu+ssh://USER@HOST/system for a lab whose "
                      "hosts need steps libvirt cannot do (VXLAN links, bridges of spanning networks)")


@dataclass(frozen=True)
class HostStep:
    """One host-level change: `do` makes it, `undo` takes it back, `done` (optional) says
    whether it is already in place, so a second deploy changes nothing."""

    what: str
    do: tuple[str, ...]
    undo: tuple[str, ...] | None = None
    done: tuple[str, ...] | None = None
    stdin: str | None = None

    def needed(self, transport: Transport) -> bool:
        if self.done is None:
            return True
        return transport.run(self.done, check=False).returncode != 0


def run_steps(steps: Sequence[HostStep], transport: Transport,
              journal_run: Callable[[str, Callable[[], object], Callable[[], object] | None], object],
              ) -> list[str]:
    """Run the steps that are needed as journal steps (journal_run is Journal.run);
    returns what was done. A step that fails raises HostCommandError (the journal then
    undoes the steps before it)."""
    done = []
    for step in steps:
        if not step.needed(transport):
            continue
        what = f"{step.what} on {transport.description}"
        undo = None
        if step.undo is not None:
            undo_command = step.undo

            def undo(command: tuple[str, ...] = undo_command) -> None:
                transport.run(command)

        def do(s: HostStep = step) -> object:
            return transport.run(s.do, stdin=s.stdin)

        journal_run(what, do, undo)
        done.append(what)
    return done
