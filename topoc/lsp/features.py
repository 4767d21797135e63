"""What the language server answers, as pure functions of one analysed document
(topoc.lsp.analysis): diagnostics, definition, references, hover, document symbols,
rename and formatting. Completion lives in topoc.lsp.completion.

Every answer is in LSP types (lsprotocol) with positions already in the client's units;
none of these functions talks to a client, so the tests call them directly.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from lsprotocol import types

from topoc.compiler import compile_source
from topoc.diagnostics import Diagnostic, Severity
from topoc.front.fmt import format_source
from topoc.front.span import Span
from topoc.front.syntax import Block, Statement, SyntaxTree, Token
from topoc.lsp.analysis import Analysis
from topoc.lsp.index import NETWORK, NODE, Occurrence
from topoc.model.family import family_of, parse_address
from topoc.model.ir import External, Host, Lab, Network, Nic, Route, Vm

SOURCE = "topoc"

_SEVERITY = {
    Severity.ERROR: types.DiagnosticSeverity.Error,
    Severity.WARNING: types.DiagnosticSeverity.Warning,
    Severity.NOTE: types.DiagnosticSeverity.Information,
}


# --- diagnostics ----------------------------------------------------------------------


def lsp_message(d: Diagnostic) -> str:
    """The message an editor shows: topoc's message, then its hint on a line of its own."""
    return f"{d.message}\nhint: {d.hint}" if d.hint else d.message


def diagnostics(analysis: Analysis) -> list[types.Diagnostic]:
    """Exactly `topoc check`'s diagnostics for this text, in its order."""
    return [types.Diagnostic(range=analysis.range(d.span), message=lsp_message(d),
                             severity=_SEVERITY[d.severity], code=d.code, source=SOURCE)
            for d in analysis.compilation.diagnostics]


# --- finding what is under the cursor -------------------------------------------------


def occurrence_at(analysis: Analysis, position: types.Position) -> Occurrence | None:
    line, column = analysis.from_position(position)
    return analysis.index.at(line, column)


def item_at(tree: SyntaxTree | None, line: int) -> Block | Statement | None:
    """The top-level item (block or statement) spanning 1-based `line`."""
    if tree is None or not tree.items:
        return None
    starts = [item.span.line for item in tree.items]
    i = bisect.bisect_right(starts, line) - 1
    if i < 0:
        return None
    item = tree.items[i]
    return item if item.span.line <= line <= item.span.end_line else None


def statement_at(tree: SyntaxTree | None, line: int) -> Statement | None:
    item = item_at(tree, line)
    if isinstance(item, Statement):
        return item
    if isinstance(item, Block):
        for stmt in item.body:
            if stmt.span.line <= line <= stmt.span.end_line:
                return stmt
    return None


def token_at(tree: SyntaxTree | None, line: int, column: int) -> Token | None:
    item = item_at(tree, line)
    if item is None:
        return None
    tokens: Iterable[Token] = item.header if isinstance(item, Block) else item.tokens
    if isinstance(item, Block):
        tokens = (*item.header, *(t for s in item.body for t in s.tokens))
    for tok in tokens:
        s = tok.span
        if s.line == line and s.column <= column <= s.end_column:
            return tok
    return None


# --- definition and references --------------------------------------------------------


def _address_definition(lab: Lab | None, text: str) -> Span | None:
    """Where the address `text` is given: the nic (or network) that carries it."""
    if lab is None:
        return None
    ip = parse_address(text)
    if ip is None:
        return None
    family = family_of(ip)
    for node in lab.nodes:
        for nic in node.nics:
            address = nic.address_in(family)
            if address is not None and address.ip == ip:
                span = nic.address_span_in(family)
                return span if span.file != "<unknown>" else nic.span
    for net in lab.networks:
        if net.gateway_in(family) == ip:
            return net.address_span_in(family)
    return None


def definition(analysis: Analysis, uri: str, position: types.Position) -> list[types.Location]:
    """Where the name under the cursor is defined; for an address in an `expect`, the
    nic that has it."""
    occ = occurrence_at(analysis, position)
    if occ is not None:
        found = analysis.index.definition(occ.namespace, occ.name)
        return [analysis.location(uri, found.span)] if found is not None else []
    line, column = analysis.from_position(position)
    stmt = statement_at(analysis.tree, line)
    tok = token_at(analysis.tree, line, column)
    if stmt is not None and stmt.kind == "expect" and tok is not None and tok.kind == "WORD":
        span = _address_definition(analysis.compilation.lab, tok.text)
        if span is not None:
            return [analysis.location(uri, span)]
    return []


def references(analysis: Analysis, uri: str, position: types.Position,
               include_declaration: bool = True) -> list[types.Location]:
    occ = occurrence_at(analysis, position)
    if occ is None:
        return []
    return [analysis.location(uri, o.span) for o in analysis.index.uses(occ.namespace, occ.name)
            if include_declaration or not o.definition]


def highlights(analysis: Analysis, position: types.Position) -> list[types.DocumentHighlight]:
    occ = occurrence_at(analysis, position)
    if occ is None:
        return []
    return [types.DocumentHighlight(analysis.range(o.span),
                                    types.DocumentHighlightKind.Write if o.definition
                                    else types.DocumentHighlightKind.Read)
            for o in analysis.index.uses(occ.namespace, occ.name)]


# --- rename ---------------------------------------------------------------------------


class RenameRefused(Exception):
    """The rename cannot be done; the message says why (shown to the user)."""


def prepare_rename(analysis: Analysis, position: types.Position) -> types.Range | None:
    if analysis.stale:
        return None
    occ = occurrence_at(analysis, position)
    return analysis.range(occ.span) if occ is not None else None


def _name_problem(name: str) -> str | None:
    """Why `name` cannot name a block, asked of the compiler itself (a one-host lab that
    compiles clean with a good name), so the rule lives in one place: the front end."""
    if not name or any(ch.isspace() for ch in name):
        return "names have no spaces"
    problems = compile_source(f"lab x\nhost {name} {{\n}}\n", "rename").diagnostics
    return problems[0].message if problems else None


def rename(analysis: Analysis, uri: str, position: types.Position, new_name: str) -> types.WorkspaceEdit:
    """Every occurrence of the name under the cursor, definition and uses, renamed."""
    if analysis.stale:
        raise RenameRefused("the file has syntax errors; fix them before renaming")
    occ = occurrence_at(analysis, position)
    if occ is None:
        raise RenameRefused("no network, host, VM or external name here")
    problem = _name_problem(new_name)
    if problem is not None:
        raise RenameRefused(f"`{new_name}` is not a valid name: {problem}")
    if new_name != occ.name and analysis.index.definition(occ.namespace, new_name) is not None:
        what = "network" if occ.namespace == NETWORK else "node"
        raise RenameRefused(f"a {what} named `{new_name}` already exists")
    edits = [types.TextEdit(analysis.range(o.span), new_name)
             for o in analysis.index.uses(occ.namespace, occ.name)]
    return types.WorkspaceEdit(changes={uri: edits})


# --- formatting -----------------------------------------------------------------------


def formatting(analysis: Analysis) -> list[types.TextEdit]:
    """`topoc fmt`'s text as one edit of the whole document; none when the file does not
    parse or is formatted already. FormatError (a bug in topoc) propagates."""
    formatted, _ = format_source(analysis.source, analysis.file)
    if formatted is None or formatted == analysis.source:
        return []
    return [types.TextEdit(types.Range(types.Position(0, 0), analysis.end), formatted)]


# --- document symbols -----------------------------------------------------------------

_SYMBOL_KINDS = {
    "lab": types.SymbolKind.Module,
    "network": types.SymbolKind.Interface,
    "host": types.SymbolKind.Class,
    "vm": types.SymbolKind.Object,
    "external": types.SymbolKind.Object,
    "forward": types.SymbolKind.Event,
    "expect": types.SymbolKind.Boolean,
    "nic": types.SymbolKind.Field,
    "route": types.SymbolKind.Field,
}


def _text(tokens: Iterable[Token]) -> str:
    return " ".join(t.text for t in tokens)


def document_symbols(analysis: Analysis) -> list[types.DocumentSymbol]:
    """The outline: the lab, each block with its nics and routes, each forward and expect."""
    if analysis.tree is None or analysis.stale:
        return []
    symbols = []
    for item in analysis.tree.items:
        if isinstance(item, Block):
            children = [types.DocumentSymbol(_text(stmt.tokens), _SYMBOL_KINDS[stmt.kind],
                                             analysis.range(stmt.span), analysis.range(stmt.span))
                        for stmt in item.body if stmt.kind in ("nic", "route")]
            detail = _text(item.header[:1] + item.header[2:])
            symbols.append(types.DocumentSymbol(item.name.text, _SYMBOL_KINDS[item.kind],
                                                analysis.range(item.span), analysis.range(item.name.span),
                                                detail=detail, children=children or None))
        elif item.kind in _SYMBOL_KINDS:
            name = item.args[0].text if item.kind == "lab" and item.args else _text(item.tokens)
            symbols.append(types.DocumentSymbol(name, _SYMBOL_KINDS[item.kind], analysis.range(item.span),
                                                analysis.range(item.span), detail=item.kind))
    return symbols


# --- hover ----------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


def _nic_line(nic: Nic) -> str:
    parts = [f"`{nic.name}` on `{nic.network}`"]
    parts.append(" and ".join(str(a) for a in nic.addresses) if nic.addresses else "no static address (DHCP)")
    if nic.mac is not None:
        parts.append(f"mac {nic.mac}{' (derived)' if nic.mac_derived else ''}")
    if nic.model:
        parts.append(f"model {nic.model}")
    parts += [f"gateway {gateway}" for gateway in (nic.gateway, nic.gateway6) if gateway is not None]
    return "- nic " + ", ".join(parts)


def _route_line(route: Route) -> str:
    return f"- route {'default' if route.is_default else route.destination} via {route.via}"


def _network_hover(lab: Lab, net: Network) -> list[str]:
    where = " on " + ", ".join(f"`{h}`" for h in net.hosts) if net.hosts else ""
    lines = [f"**network `{net.name}`**{where}: {net.model}"]
    if net.via:
        lines.append(f"- {'enslaves' if net.mode.value == 'bridged' else 'uplink'} `{net.via}`")
    if net.bridge:
        lines.append(f"- bridge `{net.bridge}`{' (derived)' if net.bridge_derived else ''}")
    lines.append(f"- subnet {net.subnet}" if net.subnet is not None else "- no subnet")
    lines.append(f"- gateway {net.gateway} (the host's address on the bridge)"
                 if net.gateway is not None else "- no gateway: the host has no address on it")
    lines.append(f"- DHCP {net.dhcp.start} - {net.dhcp.end}" if net.dhcp is not None else "- no DHCP")
    if net.dns:
        lines.append("- DNS on")
    if net.domain:
        lines.append(f"- domain {net.domain}")
    if net.mtu:
        lines.append(f"- MTU {net.mtu}")
    members = [vm.name for vm in lab.vms for nic in vm.nics if nic.network == net.name]
    if members:
        shown = ", ".join(members[:10]) + (f" and {len(members) - 10} more" if len(members) > 10 else "")
        lines.append(f"- {len(members)} VM nic{'s' if len(members) != 1 else ''}: {shown}")
    return lines


def _node_hover(lab: Lab, node: Host | Vm | External) -> list[str]:
    if isinstance(node, Vm):
        lines = [f"**vm `{node.name}`** on `{node.host}`: {_size(node.memory)}, "
                 f"{node.vcpus} vCPU{'s' if node.vcpus != 1 else ''}"]
        if node.disk:
            lines.append(f"- disk `{node.disk}`")
    elif isinstance(node, Host):
        nets = lab.networks_on(node.name)
        vms = lab.vms_on(node.name)
        lines = [f"**host `{node.name}`**: {len(nets)} network{'s' if len(nets) != 1 else ''}, "
                 f"{len(vms)} VM{'s' if len(vms) != 1 else ''}"]
    else:
        lines = [f"**external `{node.name}`**: a machine outside the hosts"]
    lines += [_nic_line(nic) for nic in node.nics]
    lines += [_route_line(route) for route in node.routes]
    return lines


def _block_text(analysis: Analysis, occ: Occurrence) -> list[str]:
    """When the lab did not lower: the definition's own lines, as written."""
    found = analysis.index.definition(occ.namespace, occ.name)
    if found is None:
        return [f"`{occ.name}`: no {'network' if occ.namespace == NETWORK else 'node'} has this name"]
    item = item_at(analysis.tree, found.span.line)
    if item is None or analysis.stale:
        return [f"`{occ.name}` (defined on line {found.span.line})"]
    text = "\n".join(analysis.lines[item.span.line - 1: item.span.end_line])
    return [f"`{occ.name}` (the lab has errors, so this is its text as written)", "```topo", text, "```"]


def _expect_source(lab: Lab, text: str) -> str | None:
    """An `expect`'s left side as a node: a node's name, or the node that has the address
    (on a nic, or a host's on its network's bridge)."""
    if lab.node(text) is not None:
        return text
    ip = parse_address(text)
    if ip is None:
        return None
    family = family_of(ip)
    for node in lab.nodes:
        if any((a := nic.address_in(family)) is not None and a.ip == ip for nic in node.nics):
            return node.name
    return next((net.host for net in lab.networks if net.gateway_in(family) == ip and net.host), None)


def expect_verdict(analysis: Analysis, stmt: Statement) -> str | None:
    """The engine's verdict on one `expect` line and its hop-by-hop explanation. The
    verdict is the check's: an expect the engine contradicts but `topoc check` leaves
    alone (it crosses a name with an error of its own) is "not judged"."""
    from topoc.model.reach import explain, is_address

    lab = analysis.compilation.lab
    if lab is None or len(stmt.tokens) < 4:
        return None
    src_text, arrow, dst = stmt.tokens[1].text, stmt.tokens[2].text, stmt.tokens[3].text
    wanted = arrow == "->"
    src = _expect_source(lab, src_text)
    if src is None:
        return f"`{src_text}`: no node has this name or address"
    if lab.node(dst) is None and not is_address(dst):
        return f"`{dst}` is neither a node nor an IP address"
    story = explain(analysis.compilation.analysis or lab, src, dst)
    reachable = story.split("\n", 1)[0].endswith(": reachable")
    failed = any(d.code == "expect-failed" and d.span.line == stmt.span.line
                 for d in analysis.compilation.diagnostics)
    if reachable == wanted:
        verdict = "holds"
    elif failed:
        verdict = "does not hold"
    else:
        verdict = "not judged: it involves a name with an error of its own"
    head = (f"**expect {src_text} {arrow} {dst}**: {verdict} "
            f"({src} {'reaches' if reachable else 'does not reach'} {dst})")
    return "\n".join([head, "", "```text", story.rstrip("\n"), "```"])


def hover(analysis: Analysis, position: types.Position) -> types.Hover | None:
    line, _ = analysis.from_position(position)
    lab = analysis.compilation.lab
    stmt = statement_at(analysis.tree, line)
    occ = occurrence_at(analysis, position)
    if stmt is not None and stmt.kind == "expect" and lab is not None and not analysis.stale:
        verdict = expect_verdict(analysis, stmt)
        if verdict is not None:
            return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, verdict),
                               analysis.range(stmt.span))
    if occ is None:
        return None
    net = lab.network(occ.name) if lab is not None and occ.namespace == NETWORK else None
    node = lab.node(occ.name) if lab is not None and occ.namespace == NODE else None
    if lab is not None and net is not None:
        lines = _network_hover(lab, net)
    elif lab is not None and node is not None:
        lines = _node_hover(lab, node)
    else:
        lines = _block_text(analysis, occ)
    return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, "\n".join(lines)),
                       analysis.range(occ.span))
