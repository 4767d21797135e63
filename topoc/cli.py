"""The command line: `topoc check|fmt|...`, thin wrappers over the pipeline.

Exit codes, the same for every command: 0 no errors (warnings allowed), 1 errors in
the topology (or, for `fmt --check`, a file that would change), 2 usage or environment
problems (a missing or unreadable file, a missing tool), each with a clear message and
never a traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import os
import signal
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rich.console import Console

from topoc import __version__
from topoc.codes import CODES, DisableError, disabled_codes
from topoc.compiler import Compilation, InputError, compile_file, read_source
from topoc.diagnostics import Diagnostic, has_errors, render_json, render_one, summary_line
from topoc.interrupts import Interrupted, raise_on_signals
from topoc.model.family import FAMILIES, Family

if TYPE_CHECKING:  # deploy imports libvirt lazily; the CLI names its types only
    from collections.abc import Callable
    from typing import Any

    from topoc.deploy.engine import Plan, Target
    from topoc.deploy.multi import HostTarget
    from topoc.model.analysis import Analysis
    from topoc.model.ir import Lab
    from topoc.verify.report import Report

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def _console(stderr: bool = False) -> Console:
    # rich styles only on a terminal (or with FORCE_COLOR); soft_wrap keeps long lines
    # whole. rich's own NO_COLOR support drops colours but keeps bold and dim; NO_COLOR
    # (https://no-color.org) users get no escape codes at all.
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(stderr=stderr, highlight=False, soft_wrap=True,
                   color_system=None if plain else "auto")  # "auto" is rich's default


def fail_usage(message: str) -> NoReturn:
    _console(stderr=True).print(f"topoc: error: {message}", markup=False)
    sys.exit(EXIT_USAGE)


def print_diagnostics(diagnostics: list[Diagnostic], sources: dict[str, str],
                      stderr: bool = False) -> None:
    console = _console(stderr)
    for i, d in enumerate(diagnostics):
        if i:
            console.print()
        console.print(render_one(d, sources))


_disable_option = click.option(
    "--disable", "disable", multiple=True, metavar="CODE",
    help="switch a warning code off for this run (repeatable; errors cannot be)")


def disabled_or_exit(names: tuple[str, ...]) -> frozenset[str]:
    """The --disable codes; an unknown code or an error's is a usage error (exit 2)."""
    try:
        return disabled_codes(names)
    except DisableError as e:
        fail_usage(f"--disable: {e}")


def compile_or_exit(path: str, disable: tuple[str, ...] = ()) -> Compilation:
    """Compile one file for a command that needs a clean lab: diagnostics go to stderr,
    and errors end the command with exit code 1 before anything is written."""
    try:
        result = compile_file(path, disabled=disabled_or_exit(disable))
    except InputError as e:
        fail_usage(str(e))
    if result.diagnostics:
        print_diagnostics(result.diagnostics, {path: result.source}, stderr=True)
    if not result.ok:
        _console(stderr=True).print(summary_line(result.diagnostics, 1), markup=False)
        sys.exit(EXIT_ERRORS)
    return result


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="topoc")
def cli() -> None:
    """topoc compiles .topo lab topologies into libvirt XML, host scripts and diagrams,
    checked first as a graph."""


@cli.command()
@click.argument("files", nargs=-1, required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              help="text for people, json for editors and CI")
@click.option("--list-codes", is_flag=True, help="list every diagnostic code and exit")
@_disable_option
def check(files: tuple[str, ...], fmt: str, list_codes: bool, disable: tuple[str, ...]) -> None:
    """Check .topo files and report every problem at once."""
    if list_codes:
        for code in sorted(CODES.values(), key=lambda c: c.name):
            click.echo(f"{code.name:<24} {code.severity.value:<8} {code.category.value:<10} {code.summary}")
        return
    if not files:
        fail_usage("check needs at least one FILE")
    disabled = disabled_or_exit(disable)
    diagnostics: list[Diagnostic] = []
    sources: dict[str, str] = {}
    unreadable = 0
    for path in files:
        try:
            result = compile_file(path, disabled=disabled)
        except InputError as e:
            # Say so and go on: the other files' diagnostics are still worth having.
            _console(stderr=True).print(f"topoc: error: {e}", markup=False)
            unreadable += 1
            continue
        sources[path] = result.source
        diagnostics += result.diagnostics
    if fmt == "json":
        click.echo(render_json(diagnostics), nl=False)
    else:
        print_diagnostics(diagnostics, sources)
        if diagnostics:
            click.echo()
        click.echo(summary_line(diagnostics, len(files) - unreadable))
    if unreadable:
        sys.exit(EXIT_USAGE)  # an environment problem outranks errors in the topology
    sys.exit(EXIT_ERRORS if has_errors(diagnostics) else EXIT_OK)


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--check", "check_only", is_flag=True, help="change nothing; exit 1 if a file would change")
@click.option("--diff", is_flag=True, help="show the change as a unified diff instead of writing it")
def fmt(files: tuple[str, ...], check_only: bool, diff: bool) -> None:
    """Rewrite .topo files in the canonical layout."""
    from topoc.front.fmt import FormatError, format_source

    would_change = False
    errors = False
    for path in files:
        try:
            source = read_source(path)
            formatted, diagnostics = format_source(source, path)
        except InputError as e:
            fail_usage(str(e))
        except FormatError as e:
            fail_usage(str(e))
        if formatted is None:
            print_diagnostics(diagnostics, {path: source}, stderr=True)
            errors = True
            continue
        if formatted == source:
            continue
        would_change = True
        if diff:
            click.echo("".join(difflib.unified_diff(
                source.splitlines(keepends=True), formatted.splitlines(keepends=True),
                fromfile=f"{path} (original)", tofile=f"{path} (formatted)")), nl=False)
        elif check_only:
            click.echo(f"would reformat {path}")
        else:
            try:
                rewrite_in_place(path, formatted.encode("utf-8"))
            except OSError as e:
                fail_usage(f"cannot rewrite {path}: {e.strerror or e}; the file is unchanged")
            click.echo(f"reformatted {path}")
    if errors:
        sys.exit(EXIT_ERRORS)
    sys.exit(EXIT_ERRORS if would_change and (check_only or diff) else EXIT_OK)


def rewrite_in_place(path: str, data: bytes) -> None:
    """Replace a file's contents without ever leaving it half-written: the new text goes
    to a temporary file beside it (same filesystem), is fsync'ed, takes the original's
    mode (and owner, where we may), and is renamed over it; the folder is fsync'ed so the
    rename survives a crash. A symlink is followed and stays a symlink. On any failure
    (a full disk, a read-only filesystem, a signal) the temporary file is removed and the
    original is untouched, byte for byte."""
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    info = os.stat(target)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".fmt-tmp", dir=folder)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
            try:
                os.fchown(fd, info.st_uid, info.st_gid)
            except PermissionError:
                pass  # not ours to give away: the file becomes the caller's, as an editor's save does
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # best effort: some filesystems cannot fsync a folder
        folder_fd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)


def _chosen_targets(values: tuple[str, ...]) -> list[str]:
    """`--target a,b --target c` -> known, available targets in build order (default: all)."""
    from topoc.backends import TARGETS, available_targets, target_available

    asked = {t.strip() for value in values for t in value.split(",") if t.strip()}
    if not asked:
        return available_targets()
    unknown = sorted(asked - set(TARGETS))
    if unknown:
        fail_usage(f"unknown target {', '.join(unknown)}; targets are {', '.join(TARGETS)}")
    missing = sorted(t for t in asked if not target_available(t))
    if missing:
        fail_usage(f"target {', '.join(missing)} is not available in this installation")
    return [t for t in TARGETS if t in asked]


@cli.command()
@click.argument("file")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="the output directory (default: output/LAB)")
@click.option("--target", "targets", multiple=True, metavar="T[,T...]",
              help="libvirt, host, cloud-init, diagram (default: every available one)")
@_disable_option
def build(file: str, out_dir: str | None, targets: tuple[str, ...], disable: tuple[str, ...]) -> None:
    """Check FILE, then write its artifacts to output/LAB/ atomically."""
    from topoc.backends import ToolMissing, generate
    from topoc.backends.writer import MANIFEST, WriteError, write_artifacts

    lab = compile_or_exit(file, disable).lab
    assert lab is not None
    # The lab lives until the process ends: keep the cyclic GC from rescanning its
    # hundreds of thousands of objects while the backends allocate (~0.15 s at 10,000 VMs).
    gc.freeze()
    chosen = _chosen_targets(targets)
    try:
        artifacts = generate(lab, chosen)
    except ToolMissing as e:  # e.g. the diagram target without graphviz's `dot`
        fail_usage(str(e))
    except ValueError as e:  # a lab the checks let through but a backend cannot express
        _console(stderr=True).print(f"topoc: error: cannot build {file}: {e}", markup=False)
        sys.exit(EXIT_ERRORS)
    target = Path(out_dir) if out_dir else Path("output") / lab.name
    try:
        written = write_artifacts(artifacts, target, file)
    except WriteError as e:
        fail_usage(str(e))
    click.echo(f"wrote {len(artifacts)} files and {MANIFEST} to {_shown(written)} "
               f"(targets: {', '.join(chosen)})")


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _graph_format(fmt: str | None, output: str | None) -> str:
    """-f wins; else the -o extension says; else SVG."""
    from topoc.backends.diagram import EXTENSIONS

    if fmt is not None:
        return fmt
    if output is None:
        return "svg"
    found = EXTENSIONS.get(Path(output).suffix.lower())
    if found is None:
        fail_usage(f"cannot tell the format from {output!r}; give -f svg|png|dot|mermaid "
                   f"or end the name in {', '.join(sorted(EXTENSIONS))}")
    return found


@cli.command("graph")
@click.argument("file")
@click.option("-f", "--format", "fmt", type=click.Choice(["svg", "png", "dot", "mermaid"]),
              help="default: from the -o extension, else svg")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="the file to write (default: stdout for dot and mermaid, LAB.svg/.png)")
@click.option("--reach", is_flag=True, help="overlay who reaches whom (topoc.model.reach)")
@click.option("--expand", is_flag=True, help="draw every VM even in a large lab")
@_disable_option
def graph_command(file: str, fmt: str | None, output: str | None, reach: bool, disable: tuple[str, ...],
                  expand: bool) -> None:
    """Draw FILE's lab: SVG or PNG (laid out by graphviz's dot), DOT, or Mermaid."""
    from topoc.backends.diagram import ToolMissing, draw, scene_for

    result = compile_or_exit(file, disable)
    lab, analysis = result.lab, result.analysis
    assert lab is not None and analysis is not None
    chosen = _graph_format(fmt, output)
    scene = scene_for(analysis, reach=reach, expand=expand)
    for note in scene.notes:  # e.g. that a large lab was collapsed, and why
        click.echo(f"topoc: note: {note}", err=True)
    try:
        data = draw(scene, chosen)
    except ToolMissing as e:
        fail_usage(str(e))
    if output is None and chosen in ("dot", "mermaid"):
        click.echo(data.decode("utf-8"), nl=False)
        return
    target = Path(output or f"{lab.name}.{chosen}")
    try:
        target.write_bytes(data)
    except OSError as e:
        fail_usage(f"cannot write {target}: {e.strerror}")
    click.echo(f"wrote {_shown(target.resolve())}")


@cli.command("verify")
@click.argument("file")
@click.option("--keep", is_flag=True, help="leave the lab up and print how to enter and remove it")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--scripts", "scripts_dir", type=click.Path(file_okay=False),
              help="verify the host scripts in this folder (e.g. output/LAB/host) "
                   "instead of freshly generated ones")
@click.option("--live", is_flag=True,
              help="probe the deployed lab from inside its running guests (guest agent) "
                   "instead of building it in namespaces; needs --connect")
@click.option("--connect", "uri", metavar="URI", help="with --live: the lab's libvirt connection")
@click.option("--timeout", "timeout", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="with --live: seconds to wait for every guest's agent and addresses")
@_disable_option
def verify_command(file: str, keep: bool, fmt: str, scripts_dir: str | None, live: bool,
                   uri: str | None, timeout: float, disable: tuple[str, ...]) -> None:
    """Build the lab in network namespaces and prove the predicted reachability (root);
    with --live, prove it inside the deployed lab's running VMs."""
    from topoc.verify import netns as verifier
    from topoc.verify import report as rendering
    result = compile_or_exit(file, disable)
    lab, analysis = result.lab, result.analysis
    assert lab is not None and analysis is not None
    if live:
        if uri is None:
            fail_usage("verify --live needs --connect URI (the connection the lab is deployed on)")
        if keep or scripts_dir:
            fail_usage("--keep and --scripts are for the namespace run, not --live")
        report = _verify_live(lab, uri, timeout)
        session = None
    else:
        if uri is not None:
            fail_usage("--connect goes with --live")
        try:
            scripts = verifier.scripts_from_dir(lab, Path(scripts_dir)) if scripts_dir else None
            report, session = verifier.verify(analysis, scripts, keep)
        except verifier.VerifyError as e:
            fail_usage(str(e))
    if fmt == "json":
        click.echo(json.dumps(rendering.render_json(report), indent=2))
    else:
        click.echo(rendering.render_text(report, analysis), nl=False)
    if keep and session is not None and session.rig is not None:
        for line in verifier.iter_kept_instructions(session.rig):
            click.echo(line, err=fmt == "json")
    sys.exit(EXIT_ERRORS if report.mismatches else EXIT_OK)


def _verify_live(lab: Lab, uri: str, timeout: float) -> Report:
    from topoc.deploy import engine as deploy
    from topoc.verify import live
    try:
        target = deploy.connect(uri)
    except deploy.DeployError as e:
        fail_usage(str(e))
    try:
        return live.verify_live(lab, target.conn, uri, timeout)
    except live.VerifyError as e:
        fail_usage(str(e))
    finally:
        target.conn.close()


@cli.command("reach")
@click.argument("file")
@click.argument("src", required=False)
@click.argument("dst", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              help="json: {\"pairs\": [{src, dst, reachable, path, reason}]}")
@click.option("--family", type=click.Choice(["ipv4", "ipv6"]), default=None,
              help="only this address family (default: each family the lab uses)")
@_disable_option
def reach_command(file: str, src: str | None, dst: str | None, fmt: str, family: str | None,
                  disable: tuple[str, ...]) -> None:
    """Predict who reaches whom (the whole matrix, one per address family), or explain
    SRC -> DST hop by hop (DST may be a node or an IPv4 or IPv6 address)."""
    from topoc.model import reach
    result = _compilation_for_reach(file, disable)
    lab, analysis = result.lab, result.analysis
    assert lab is not None and analysis is not None
    if src is None:
        pairs = len(lab.nodes) * (len(lab.nodes) - 1)
        if pairs > reach.MAX_MATRIX_PAIRS:
            fail_usage(f"{file} has {len(lab.nodes)} nodes, {pairs:,} pairs: too many to print; "
                       "ask about one pair with `topoc reach FILE SRC DST` (`topoc check` proves "
                       "the `expect` lines without the matrix)")
        chosen = _family_or_exit(family, analysis)
        if chosen is not None:
            matrices = [reach.predict(analysis, chosen)]
        else:
            # A dual-stack lab: each family on its own (a node name means every address of
            # both, which the JSON's "pairs" keep).
            matrices = reach.predict_by_family(analysis)
        if fmt == "json":
            combined = (matrices[0] if chosen is not None or len(matrices) == 1
                        else reach.predict(analysis))
            click.echo(json.dumps(reach.matrix_json(combined, matrices), indent=2))
        else:
            click.echo(reach.render_matrices(matrices), nl=False)
        return
    if dst is None:
        fail_usage("reach needs both SRC and DST, or neither")
    if lab.node(src) is None:
        fail_usage(f"no node is named `{src}` in {file}")
    if lab.node(dst) is None and not reach.is_address(dst):
        fail_usage(f"`{dst}` is neither a node of {file} nor an IP address")
    if fmt == "json":
        pair = (reach.reach_address(analysis, src, dst) if lab.node(dst) is None
                else reach.pair(analysis, src, dst, _family_or_exit(family, analysis))[0])
        click.echo(json.dumps({"pairs": [reach.pair_json(pair)],
                               "explanation": reach.explain(analysis, src, dst)}, indent=2))
    else:
        click.echo(reach.explain(analysis, src, dst), nl=False)


@cli.command("lsp")
@click.option("--stdio", is_flag=True, help="talk over stdin/stdout (the default and only transport)")
def lsp_command(stdio: bool) -> None:
    """Run the language server over stdin/stdout, for editors (see editors/README.md)."""
    try:
        from topoc.lsp.server import serve
    except ModuleNotFoundError as e:
        if e.name not in ("pygls", "lsprotocol"):
            raise
        fail_usage(f"the language server needs pygls and lsprotocol: pip install 'topoc[lsp]' ({e})")
    serve()


def _family_or_exit(name: str | None, analysis: Analysis) -> Family | None:
    """`--family ipv4|ipv6` as a Family (None: not given); a family the lab does not use
    is a usage error."""
    if name is None:
        return None
    family = next(f for f in FAMILIES if f.facts.libvirt == name)
    if family not in analysis.families:
        fail_usage(f"the lab has no {family.title} address")
    return family


def _compilation_for_reach(path: str, disable: tuple[str, ...]) -> Compilation:
    """The lab `reach` explains: one that checks clean, or whose only errors are `expect`
    lines that do not hold (explaining those is what `reach` is for). Anything else is
    reported as `compile_or_exit` does."""
    try:
        result = compile_file(path, disabled=disabled_or_exit(disable))
    except InputError as e:
        fail_usage(str(e))
    errors = [d for d in result.diagnostics if d.severity.value == "error"]
    if result.lab is None or result.analysis is None or any(d.code != "expect-failed" for d in errors):
        return compile_or_exit(path, disable)
    if errors:
        _console(stderr=True).print(
            f"topoc: note: {len(errors)} `expect` line(s) of {path} do not hold "
            "(`topoc check` shows them); the prediction below is the model's", markup=False)
    return result


# --- plan / deploy / status / destroy: topoc.deploy.engine over a libvirt connection ---------

_connect_option = click.option(
    "--connect", "connects", multiple=True, metavar="[HOST=]URI",
    help="libvirt connection of a host: HOST=URI, repeatable, overrides the host's `connect` "
         "line; a lone URI is the connection of a one-host lab. Default: test:///default "
         "(libvirt's in-memory test driver); qemu:///system is the real host")
_host_option = click.option("--host", "host", metavar="NAME",
                            help="act on this one of the lab's hypervisors only")


def _lab_name_or_exit(path: str, disable: tuple[str, ...] = ()) -> Compilation:
    """For destroy, which needs only the lab's name: a file whose checks fail still
    names its lab (its diagnostics are shown); one that does not parse exits 1."""
    try:
        result = compile_file(path, disabled=disabled_or_exit(disable))
    except InputError as e:
        fail_usage(str(e))
    if not result.lowered_clean:
        return compile_or_exit(path, disable)
    if result.diagnostics:
        print_diagnostics(result.diagnostics, {path: result.source}, stderr=True)
    return result


class _Session:
    """The lab and its connections: one (`single`, output as for a one-host lab) or one
    per host (`hosts`, topoc.deploy.multi)."""

    def __init__(self, result: Compilation, single: Target | None, single_host: str | None,
                 hosts: list[HostTarget]) -> None:
        self.result = result
        self._single = single
        self.single_host = single_host
        self.hosts = hosts

    @property
    def lab(self) -> Lab:
        assert self.result.lab is not None
        return self.result.lab

    @property
    def single(self) -> Target:
        assert self._single is not None
        return self._single


def _deploy_session(file: str, connects: tuple[str, ...], host: str | None, *,
                    clean: bool = True, disable: tuple[str, ...] = ()) -> _Session:
    """The lab (clean unless `clean` is False) and its connections (libvirt missing or
    unreachable, or no connection for a host: exit 2)."""
    from topoc.deploy import engine as deploy
    from topoc.deploy import multi
    from topoc.deploy.report import private_host_note

    result = compile_or_exit(file, disable) if clean else _lab_name_or_exit(file, disable)
    assert result.lab is not None
    try:
        connections = multi.resolve_connections(result.lab, connects, host)
        # A network on several hosts needs host-level steps, which the multi-host path runs.
        if len(connections) > 1 or any(n.spanning for n in result.lab.networks):
            hosts = multi.connect_all(connections)
            for t in hosts:
                if t.target.private:
                    _console(stderr=True).print(private_host_note(t.target.uri), markup=False)
            return _Session(result, None, None, hosts)
        # One host (or none): one connection, the output as it always was.
        single_host, uri = next(iter(connections.items()), (host, multi.bare_uri(connects)))
        target = _connect_or_exit(uri)
    except deploy.DeployError as e:
        fail_usage(str(e))
    return _Session(result, target, single_host, [])


def _connect_or_exit(uri: str, read_only: bool = False) -> Target:
    """A deploy connection; test:///default is the test host topoc keeps between commands."""
    from topoc.deploy import engine as deploy
    from topoc.deploy.report import private_host_note, saved_test_host_note

    try:
        target = deploy.connect(uri, remember_test_host=True, read_only=read_only)
    except deploy.DeployError as e:
        fail_usage(str(e))
    if target.private:
        _console(stderr=True).print(private_host_note(uri), markup=False)
    elif target.saved_in is not None:
        _console(stderr=True).print(saved_test_host_note(uri, target.saved_in), markup=False)
    return target


def _deploy_step(result: Compilation, step: Callable[[], Any], target: Target | None = None) -> Any:
    """Run one deploy call: a clash with the host is a diagnostic (exit 1), libvirt or
    the host failing is a message (exit 2); never a traceback. On the test host topoc
    keeps, the host is saved for the next command after a call that went through."""
    from topoc.deploy import engine as deploy
    try:
        done = step()
        if target is not None:
            deploy.remember(target)
        return done
    except deploy.Refused as refused:
        print_diagnostics(refused.diagnostics, {result.file: result.source}, stderr=True)
        _console(stderr=True).print(f"\ntopoc: refused: {len(refused.diagnostics)} clash(es) with the "
                                    "host; nothing was changed", markup=False)
        sys.exit(EXIT_ERRORS)
    except deploy.DeployError as e:
        fail_usage(str(e))


# The storage pool for the VMs' overlays and seeds (VMs with an `image` or `kernel`).
_pool_option = click.option("--pool", metavar="POOL", default=None,
                            help="an existing storage pool for the VMs' overlay and seed volumes "
                                 "(default: topoc creates the dir pool LAB-images)")


def _plan_json(plan: Plan) -> dict:
    document = plan.to_json()
    document["conflicts"] = [d.to_json() for d in plan.conflicts]
    return document


@cli.command("plan")
@click.argument("file")
@_connect_option
@_host_option
@_pool_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--adopt", is_flag=True, help="plan to take existing objects of the file's names into the lab")
@_disable_option
def plan_command(file: str, connects: tuple[str, ...], host: str | None, pool: str | None, fmt: str,
                 adopt: bool, disable: tuple[str, ...]) -> None:
    """Show what `deploy` would change on each host's libvirt connection (changes nothing)."""
    from topoc.deploy import engine as deploy
    from topoc.deploy import multi
    from topoc.deploy.report import render_plan

    session = _deploy_session(file, connects, host, disable=disable)
    result, lab = session.result, session.lab
    if session.hosts:
        _refuse_adopt_on_several_hosts(adopt)
        plans = _deploy_step(result, lambda: multi.plan_all(lab, session.hosts))
    else:
        plans = [_deploy_step(result, lambda: deploy.make_plan(lab, session.single,
                                                               host=session.single_host, adopt=adopt,
                                                               pool=pool))]
    conflicts = [d for plan in plans for d in plan.conflicts]
    if fmt == "json":
        if session.hosts:
            document: dict = {"hosts": [{"host": plan.host, "uri": plan.uri, **_plan_json(plan)}
                                        for plan in plans]}
        else:
            document = _plan_json(plans[0])
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo("\n".join(render_plan(plan) for plan in plans), nl=False)
        if conflicts:
            print_diagnostics(conflicts, {file: result.source}, stderr=True)
    sys.exit(EXIT_ERRORS if conflicts else EXIT_OK)


@cli.command("deploy")
@click.argument("file")
@_connect_option
@_host_option
@_pool_option
@click.option("--start-vms", is_flag=True, help="also start the lab's VMs")
@click.option("--status", "show_status", is_flag=True, help="print the status afterwards, same connection")
@click.option("--adopt", is_flag=True,
              help="take existing networks and VMs of the file's names (that no topoc lab owns) into "
                   "the lab, changing only what differs; without it they are refused")
@_disable_option
def deploy_command(file: str, connects: tuple[str, ...], host: str | None, pool: str | None, start_vms: bool,
                   show_status: bool, adopt: bool, disable: tuple[str, ...]) -> None:
    """Check FILE, then define, autostart and start its networks and define its VMs on
    each of its hosts. All or nothing: a failed step puts every host back as it was."""
    from topoc.deploy import engine as deploy
    from topoc.deploy import multi
    from topoc.deploy.report import render_applied, render_status

    session = _deploy_session(file, connects, host, disable=disable)
    result, lab = session.result, session.lab
    if session.hosts:
        _refuse_adopt_on_several_hosts(adopt)
        plans = _deploy_step(result, lambda: multi.apply_all(lab, session.hosts, start_vms=start_vms))
        click.echo("".join(render_applied(plan) for plan in plans), nl=False)
        if show_status:
            for t, rows in _deploy_step(result, lambda: multi.status_all(lab, session.hosts)):
                click.echo(render_status(lab.name, _where(t), rows), nl=False)
        return
    target = session.single
    plan = _deploy_step(result, lambda: deploy.apply(lab, target, host=session.single_host,
                                                     start_vms=start_vms, adopt=adopt, pool=pool), target)
    click.echo(render_applied(plan), nl=False)
    if show_status:
        rows = _deploy_step(result, lambda: deploy.status(lab, target, host=session.single_host))
        click.echo(render_status(lab.name, target.uri, rows), nl=False)


def _refuse_adopt_on_several_hosts(adopt: bool) -> None:
    if adopt:
        fail_usage("--adopt takes one host's objects at a time: add --host NAME "
                   "(and --connect URI for it)")


def _where(t: HostTarget) -> str:
    return f"{t.target.uri} (host {t.host})"


@cli.command("status")
@click.argument("file")
@_connect_option
@_host_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@_disable_option
def status_command(file: str, connects: tuple[str, ...], host: str | None, fmt: str,
                   disable: tuple[str, ...]) -> None:
    """Each of the lab's networks and VMs on each host's connection: defined, active,
    autostart, bridge, DHCP leases."""
    from topoc.deploy import engine as deploy
    from topoc.deploy import multi
    from topoc.deploy.report import render_status

    session = _deploy_session(file, connects, host, disable=disable)
    result, lab = session.result, session.lab
    if session.hosts:
        per_host = _deploy_step(result, lambda: multi.status_all(lab, session.hosts))
        if fmt == "json":
            click.echo(json.dumps({"lab": lab.name, "hosts": [
                {"host": t.host, "uri": t.target.uri, "objects": [r.to_json() for r in rows]}
                for t, rows in per_host]}, indent=2))
        else:
            click.echo("".join(render_status(lab.name, _where(t), rows) for t, rows in per_host), nl=False)
        return
    target = session.single
    rows = _deploy_step(result, lambda: deploy.status(lab, target, host=session.single_host))
    if fmt == "json":
        click.echo(json.dumps({"lab": lab.name, "uri": target.uri,
                               "objects": [r.to_json() for r in rows]}, indent=2))
    else:
        click.echo(render_status(lab.name, target.uri, rows), nl=False)


@cli.command("destroy")
@click.argument("file")
@_connect_option
@_host_option
@_disable_option
def destroy_command(file: str, connects: tuple[str, ...], host: str | None, disable: tuple[str, ...]) -> None:
    """Stop and undefine the lab's VMs and networks on each of its hosts, and nothing
    else (safe twice)."""
    from topoc.deploy import engine as deploy
    from topoc.deploy import multi
    from topoc.deploy.report import render_destroyed

    session = _deploy_session(file, connects, host, clean=False, disable=disable)
    result, lab = session.result, session.lab
    if session.hosts:
        done = _deploy_step(result, lambda: multi.destroy_all(lab, session.hosts))
        click.echo("".join(render_destroyed(lab.name, _where(t), removed, left_alone)
                           for t, removed, left_alone in done), nl=False)
        return
    target = session.single
    removed, left_alone = _deploy_step(result, lambda: deploy.destroy(lab.name, target), target)
    click.echo(render_destroyed(lab.name, target.uri, removed, left_alone), nl=False)


@cli.command("import")
@click.option("--connect", "uri", default="test:///default", show_default=True, metavar="URI",
              help="the libvirt connection to read (qemu:///system is the real host)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="the .topo file to write (default: stdout)")
@click.option("--lab", "lab", default="imported", show_default=True, help="the lab's name in the file")
@click.option("--network", "networks", multiple=True, metavar="NAME", help="only this network (repeatable)")
@click.option("--vm", "vms", multiple=True, metavar="NAME", help="only this domain (repeatable)")
def import_command(uri: str, output: str | None, lab: str, networks: tuple[str, ...], vms: tuple[str, ...]) -> None:
    """Describe the networks and VMs a libvirt connection has as a .topo file (read only:
    the host is not changed). What the language cannot say is a comment and a warning."""
    from topoc.compiler import compile_source
    from topoc.deploy import engine as deploy
    from topoc.deploy import importer
    from topoc.front.fmt import FormatError
    from topoc.front.values import NAME_RE

    if not NAME_RE.fullmatch(lab):
        fail_usage(f"--lab {lab!r} is not a lab name (a letter or `_`, then letters, digits, `_`, inner `-`)")
    target = _connect_or_exit(uri, read_only=True)
    lv = deploy._libvirt()
    try:
        found = importer.read_host(target.conn, uri, networks, vms)
    except importer.ImportFailed as e:
        fail_usage(str(e))
    except lv.libvirtError as e:
        fail_usage(deploy.explain(e, uri, "read the host's networks and domains"))
    source = output or f"{lab}.topo"
    try:
        imported = importer.describe(found, lab, source)
    except (importer.ImportFailed, FormatError) as e:
        fail_usage(str(e))
    for warning in imported.warnings:
        _console(stderr=True).print(f"topoc: warning: {warning}", markup=False)
    if output is None:
        click.echo(imported.text, nl=False)
    else:
        try:
            Path(output).write_text(imported.text, encoding="utf-8")
        except OSError as e:
            fail_usage(f"cannot write {output}: {e.strerror}")
        _console(stderr=True).print(f"wrote {output}: {imported.networks} network(s), {imported.vms} VM(s) "
                                    f"from {uri}", markup=False)
    checked = compile_source(imported.text, source)
    if not checked.ok:
        print_diagnostics(checked.diagnostics, {source: imported.text}, stderr=True)
        _console(stderr=True).print(f"topoc: {source} needs fixing before `topoc deploy`: "
                                    + summary_line(checked.diagnostics, 1), markup=False)
        sys.exit(EXIT_ERRORS)


@cli.command("reset-test-host")
def reset_test_host_command() -> None:
    """Forget the test:///default host topoc keeps between commands (and its records)."""
    from topoc.deploy import testhost
    from topoc.deploy.records import default_state_dir

    directory = default_state_dir()
    if testhost.reset(directory):
        click.echo(f"forgot the saved test host in {testhost.host_file(directory).parent}: "
                   "test:///default starts from libvirt's default host again")
    else:
        click.echo("no saved test host: test:///default is libvirt's default host")


def main() -> None:
    raise_on_signals()
    try:
        cli.main(prog_name="topoc", standalone_mode=True)
    except (Interrupted, KeyboardInterrupt) as stopped:
        stop = stopped.exit_code if isinstance(stopped, Interrupted) else 130
        what = "terminated" if stop == 128 + signal.SIGTERM else "interrupted"
        with contextlib.suppress(OSError, ValueError):
            _console(stderr=True).print(f"topoc: {what}", markup=False)
        _hard_exit(stop)
    except SystemExit as done:
        code = done.code
        _hard_exit(code if isinstance(code, int) else (0 if code is None else 1))
    _hard_exit(0)


def _hard_exit(code: int) -> None:
    """Exit without tearing down the heap, as mypy does: a 10,000-VM lab is a few
    hundred thousand objects, and freeing them one by one at exit costs a tenth of the
    run. Every command has finished its work (files are written and closed) by now."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the reader went away (a closed pipe): nothing left to deliver
    os._exit(code)

