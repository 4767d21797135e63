"""`topoc lsp` driven by a real LSP client over stdio (pytest-lsp): open, change,
diagnostics, definition, references, hover, completion, formatting, rename, shutdown.

What must hold, on every example and every golden bad input: the server's diagnostics
are `topoc check --format json`'s (ranges made 0-based, in UTF-16 units), formatting
gives `topoc fmt`'s text, and definition/references are right for every name (walked
from the lowered IR, not from the server's own index).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from conftest import GOLDEN, example_files
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from test_lsp_features import _grammar_statements

from topoc.compiler import compile_file
from topoc.model.ir import Lab

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVER = [sys.executable, "-m", "topoc", "lsp"]
BAD_INPUTS = sorted((GOLDEN / "diagnostics").glob("*/input.topo")) + \
    sorted((GOLDEN / "checks").glob("*/input.topo"))
FMT_INPUTS = sorted((GOLDEN / "fmt").glob("*/input.topo"))


def _uri(path: Path) -> str:
    return path.resolve().as_uri()


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        root_uri=Path.cwd().as_uri()))
    yield
    await lsp_client.shutdown_session()


async def _diagnostics(client: LanguageClient, uri: str, timeout: float = 30) -> list[types.Diagnostic]:
    """The next diagnostics published for `uri` (the caller popped the old ones)."""
    async with asyncio.timeout(timeout):
        while uri not in client.diagnostics:
            await asyncio.sleep(0.005)
    return list(client.diagnostics[uri])


async def _open(client: LanguageClient, path: Path, text: str | None = None,
                version: int = 1) -> list[types.Diagnostic]:
    uri = _uri(path)
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=uri, language_id="topo", version=version, text=_read(path) if text is None else text)))
    return await _diagnostics(client, uri)


def _close(client: LanguageClient, path: Path) -> None:
    client.text_document_did_close(types.DidCloseTextDocumentParams(
        types.TextDocumentIdentifier(_uri(path))))


def _utf16(line: str, column: int) -> int:
    return len(line[: column - 1].encode("utf-16-le")) // 2


def _expected(entry: dict, lines: list[str]) -> tuple:
    def at(line: int, column: int) -> tuple[int, int]:
        text = lines[line - 1] if line - 1 < len(lines) else ""
        return line - 1, _utf16(text, column)

    message = entry["message"] + (f"\nhint: {entry['hint']}" if entry["hint"] else "")
    severity = {"error": 1, "warning": 2, "note": 3}[entry["severity"]]
    return (entry["code"], severity, message, at(entry["line"], entry["column"]),
            at(entry["end_line"], entry["end_column"]))


def _actual(d: types.Diagnostic) -> tuple:
    return (d.code, int(d.severity or 0), d.message, (d.range.start.line, d.range.start.character),
            (d.range.end.line, d.range.end.character))


@pytest.fixture(scope="module")
def check_json() -> dict[str, list[dict]]:
    """`topoc check --format json` over every input at once, grouped by file."""
    files = [str(p.resolve()) for p in (*example_files(), *BAD_INPUTS)]
    run = subprocess.run([*SERVER[:-1], "check", "--format", "json", *files],
                         capture_output=True, text=True, check=False)
    assert run.returncode in (0, 1), run.stderr
    grouped: dict[str, list[dict]] = {f: [] for f in files}
    for entry in json.loads(run.stdout)["diagnostics"]:
        grouped[entry["file"]].append(entry)
    return grouped


@pytest.mark.parametrize("path", [*example_files(), *BAD_INPUTS],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
async def test_diagnostics_equal_topoc_check(client: LanguageClient, check_json, path: Path):
    got = await _open(client, path)
    _close(client, path)
    lines = _read(path).removeprefix("\ufeff").replace("\r\n", "\n").split("\n")
    expected = [_expected(e, lines) for e in check_json[str(path.resolve())]]
    assert [_actual(d) for d in got] == expected
    assert all(d.source == "topoc" for d in got)
    if path.parent.parent.name in ("diagnostics", "checks"):
        assert expected, f"{path} is a bad input and should have diagnostics"


@pytest.fixture(scope="module")
def fmt_output(tmp_path_factory) -> dict[Path, str]:
    """`topoc fmt` run on copies of every input (one process for all)."""
    work = tmp_path_factory.mktemp("fmt")
    copies = {}
    for i, path in enumerate((*example_files(), *FMT_INPUTS, *BAD_INPUTS)):
        copy = work / f"{i}.topo"
        shutil.copyfile(path, copy)
        copies[path] = copy
    subprocess.run([*SERVER[:-1], "fmt", *map(str, copies.values())], capture_output=True, check=False)
    return {path: copy.read_bytes().decode("utf-8") for path, copy in copies.items()}


def _apply(text: str, edits: list[types.TextEdit]) -> str:
    """Apply edits (UTF-16 positions) to text, last first."""
    lines = text.split("\n")

    def offset(pos: types.Position) -> int:
        if pos.line >= len(lines):
            return len(text)
        before = sum(len(line) + 1 for line in lines[: pos.line])
        units, chars = 0, 0
        for ch in lines[pos.line]:
            if units >= pos.character:
                break
            units += len(ch.encode("utf-16-le")) // 2
            chars += 1
        return before + chars

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]
        lines = text.split("\n")
    return text


@pytest.mark.parametrize("path", [*example_files(), *FMT_INPUTS, *BAD_INPUTS],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
async def test_formatting_equals_topoc_fmt(client: LanguageClient, fmt_output, path: Path):
    await _open(client, path)
    edits = await client.text_document_formatting_async(types.DocumentFormattingParams(
        types.TextDocumentIdentifier(_uri(path)), types.FormattingOptions(tab_size=4, insert_spaces=True)))
    _close(client, path)
    assert _apply(_read(path), list(edits or [])) == fmt_output[path]


# --- definition and references, for every name of every example ------------------------


def _find(lines: list[str], line: int, pattern: str) -> tuple[int, int, int]:
    """(0-based line, start, end) of group 1 of `pattern` on 1-based `line`."""
    m = re.search(pattern, lines[line - 1])
    assert m is not None, (line, pattern, lines[line - 1])
    return line - 1, m.start(1), m.end(1)


def _names_from_ir(lab: Lab, lines: list[str]) -> tuple[dict[str, tuple], dict[str, set[tuple]]]:
    """Every definition and use of every name, from the lowered IR and the text: the
    oracle the server's answers are checked against. Keys: 'network:NAME', 'node:NAME'."""
    defs: dict[str, tuple] = {}
    uses: dict[str, set[tuple]] = {}

    def use(key: str, where: tuple) -> None:
        uses.setdefault(key, set()).add(where)

    for net in lab.networks:
        defs[f"network:{net.name}"] = _find(lines, net.span.line, rf"network\s+({re.escape(net.name)})\b")
        if re.search(r"\bon\s", lines[net.span.line - 1]):  # else on the only host, unwritten
            for host in net.hosts:
                use(f"node:{host}", _find(lines, net.span.line, rf"\bon\s+(?:[\w-]+,\s*)*({re.escape(host)})\b"))
    for node in lab.nodes:
        kind = node.kind.value
        defs[f"node:{node.name}"] = _find(lines, node.span.line, rf"{kind}\s+({re.escape(node.name)})\b")
        host = getattr(node, "host", None)
        if host is not None:
            use(f"node:{host}", _find(lines, node.span.line, rf"\bon\s+({re.escape(host)})\b"))
        for nic in node.nics:
            use(f"network:{nic.network}",
                _find(lines, nic.span.line, rf"\bon\s+({re.escape(nic.network)})\b"))
    for fwd in lab.forwards:
        use(f"node:{fwd.vm}", _find(lines, fwd.span.line, rf"\bto\s+({re.escape(fwd.vm)}):"))
    for exp in lab.expects:
        for name, span in ((exp.src, exp.src_span), (exp.dst, exp.dst_span)):
            if lab.node(name) is not None:
                use(f"node:{name}", (span.line - 1, span.column - 1, span.end_column - 1))
    for key, where in defs.items():
        use(key, where)
    return defs, uses


def _loc(loc: types.Location) -> tuple[int, int, int]:
    return loc.range.start.line, loc.range.start.character, loc.range.end.character


# The examples, and a network on two hosts (`on kvm1, kvm2`).
NAMED = [*example_files(), GOLDEN.parent / "diagram_inputs" / "spanning.topo"]


@pytest.mark.parametrize("path", NAMED, ids=lambda p: p.name)
async def test_definition_and_references_for_every_name(client: LanguageClient, path: Path):
    lab = compile_file(str(path)).lab
    assert lab is not None
    lines = _read(path).split("\n")
    defs, uses = _names_from_ir(lab, lines)
    await _open(client, path)
    doc = types.TextDocumentIdentifier(_uri(path))
    checked = 0
    for key, places in uses.items():
        for line, start, end in sorted(places):
            for character in (start, (start + end) // 2, end):
                position = types.Position(line, character)
                found = await client.text_document_definition_async(types.DefinitionParams(doc, position))
                assert isinstance(found, (list, tuple))
                assert [_loc(x) for x in found] == [defs[key]], (key, line, character)
                refs = await client.text_document_references_async(types.ReferenceParams(
                    context=types.ReferenceContext(include_declaration=True), text_document=doc, position=position))
                assert refs is not None and {_loc(x) for x in refs} == places, (key, line, character)
                assert all(x.uri == doc.uri for x in [*found, *refs])
                checked += 1
    _close(client, path)
    assert checked >= 3 * len(defs)


# --- editing ----------------------------------------------------------------------------


async def test_change_updates_diagnostics_and_keeps_others_on_a_half_typed_line(client, tmp_path):
    path = tmp_path / "lab.topo"
    source = _read(EXAMPLES_NAT)
    path.write_text(source, encoding="utf-8")
    assert await _open(client, path) == []
    uri = _uri(path)
    lines = source.split("\n")
    vm1 = next(i for i, text in enumerate(lines) if text.startswith("vm vm1"))
    # Type a half line at the end of vm1's block and break a nic's address elsewhere.
    edits = [
        types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(vm1 + 4, 0), types.Position(vm1 + 4, 0)), text="    nic eth1 on\n"),
    ]
    client.diagnostics.pop(uri, None)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(uri=uri, version=2), edits))
    got = await _diagnostics(client, uri)
    new_text = "\n".join(lines[: vm1 + 4] + ["    nic eth1 on"] + lines[vm1 + 4:])
    path.write_text(new_text, encoding="utf-8")
    expected = compile_file(str(path)).diagnostics
    assert [(d.code, d.range.start.line) for d in got] == [(d.code, d.span.line - 1) for d in expected]
    assert got and got[0].code == "syntax-error" and got[0].range.start.line == vm1 + 4
    # Hover and navigation still work on the rest of the file while the line is broken.
    defn = await client.text_document_definition_async(types.DefinitionParams(
        types.TextDocumentIdentifier(uri), types.Position(vm1 + 5 + 0, 0)))
    assert defn == [] or defn is None or isinstance(defn, list)
    use = next(i for i, text in enumerate(new_text.split("\n")) if text.startswith("expect vm0 -> vm1"))
    defn = await client.text_document_definition_async(types.DefinitionParams(
        types.TextDocumentIdentifier(uri), types.Position(use, len("expect vm0 -> v"))))
    assert isinstance(defn, list) and [_loc(x) for x in defn] == [(vm1, 3, 6)]
    # Undo: clean again.
    client.diagnostics.pop(uri, None)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(uri=uri, version=3),
        [types.TextDocumentContentChangeWholeDocument(text=source)]))
    assert await _diagnostics(client, uri) == []
    _close(client, path)


EXAMPLES_NAT = Path(__file__).resolve().parent.parent / "examples" / "nat.topo"
EXAMPLES_MIXED = Path(__file__).resolve().parent.parent / "examples" / "mixed.topo"


def _position_of(text: str, needle: str, offset: int = 0) -> types.Position:
    for i, line in enumerate(text.split("\n")):
        j = line.find(needle)
        if j >= 0:
            return types.Position(i, j + offset)
    raise AssertionError(needle)


async def test_hover(client: LanguageClient):
    text = _read(EXAMPLES_MIXED)
    await _open(client, EXAMPLES_MIXED)
    doc = types.TextDocumentIdentifier(_uri(EXAMPLES_MIXED))

    async def hover(needle: str, offset: int = 1) -> str:
        result = await client.text_document_hover_async(types.HoverParams(doc, _position_of(text, needle, offset)))
        assert result is not None and isinstance(result.contents, types.MarkupContent), needle
        return result.contents.value

    net = await hover("front on", 1)
    assert "nat" in net and "bridge `natbr0`" in net and "188.64.100.0/24" in net
    assert "gateway 188.64.100.1" in net and "DHCP 188.64.100.128 - 188.64.100.254" in net
    vm = await hover("vm proxy", 4)
    assert "**vm `proxy`** on `kvm1`" in vm and "188.64.100.2/24" in vm and "on `back`" in vm
    host = await hover("host kvm1", 6)
    assert "**host `kvm1`**" in host and "192.168.101.11/24" in host
    expect = await hover("expect proxy !-> 10.10.101.10")
    assert "holds" in expect and "LIBVIRT_FWI" in expect and "request:" in expect
    none = await client.text_document_hover_async(types.HoverParams(doc, types.Position(0, 0)))
    assert none is None
    _close(client, EXAMPLES_MIXED)


async def test_completion(client: LanguageClient, tmp_path):
    path = tmp_path / "c.topo"
    text = _read(EXAMPLES_MIXED) + "\nvm extra on \nnetwork more on kvm1 {\n    mode \n    \n}\nexpect api -> \n"
    await _open(client, path, text)
    doc = types.TextDocumentIdentifier(_uri(path))
    lines = text.split("\n")

    async def labels(line_start: str, at_end_of_it: bool = False) -> list[str]:
        i = max(k for k, line in enumerate(lines) if line.startswith(line_start))
        column = len(line_start) if at_end_of_it else len(lines[i])
        result = await client.text_document_completion_async(types.CompletionParams(
            doc, types.Position(i, column)))
        items = result.items if isinstance(result, types.CompletionList) else (result or [])
        return [item.label for item in items]

    assert await labels("vm extra on ") == ["kvm1"]
    assert await labels("    mode ") == ["isolated", "routed", "nat", "bridged", "open", "external"]
    assert set(await labels("    ")) == _grammar_statements("_network_stmt")
    assert await labels("expect api -> ") == ["kvm1", "proxy", "api", "router"]
    # On a name being typed: the names that fit there (the editor filters by the prefix).
    assert await labels("    nic eth0 on fr", at_end_of_it=True) == ["lan", "front", "svc", "back", "more"]
    assert await labels("    nic eth0 on front address 188.64.100.2") == []  # a value: nothing to offer
    assert await labels("# ", at_end_of_it=True) == []  # in a comment
    _close(client, path)


async def test_rename_across_the_file(client: LanguageClient, tmp_path):
    path = tmp_path / "r.topo"
    text = _read(EXAMPLES_MIXED)
    path.write_text(text, encoding="utf-8")
    await _open(client, path)
    doc = types.TextDocumentIdentifier(_uri(path))
    position = _position_of(text, "vm proxy", 4)
    prepared = await client.text_document_prepare_rename_async(types.PrepareRenameParams(doc, position))
    assert prepared is not None
    edit = await client.text_document_rename_async(types.RenameParams(doc, position, "gateway-vm"))
    assert edit is not None and edit.changes is not None
    renamed = _apply(text, list(edit.changes[doc.uri]))
    assert "proxy" not in re.sub(r"#.*", "", renamed)
    path.write_text(renamed, encoding="utf-8")
    result = compile_file(str(path))
    assert result.ok and result.lab is not None and result.lab.node("gateway-vm") is not None
    code = re.sub(r"#.*", "", text)
    assert len(edit.changes[doc.uri]) == len(re.findall(r"\bproxy\b", code))
    # A taken name or an invalid one is refused with a message, and the server lives on.
    for bad in ("api", "9lives"):
        with pytest.raises(Exception, match=r"already exists|not a valid name"):
            await client.text_document_rename_async(types.RenameParams(doc, position, bad))
    assert await client.text_document_hover_async(types.HoverParams(doc, position)) is not None
    _close(client, path)


async def test_document_symbols(client: LanguageClient):
    await _open(client, EXAMPLES_MIXED)
    result = await client.text_document_document_symbol_async(types.DocumentSymbolParams(
        types.TextDocumentIdentifier(_uri(EXAMPLES_MIXED))))
    _close(client, EXAMPLES_MIXED)
    assert result is not None
    names = [s.name for s in result if isinstance(s, types.DocumentSymbol)]
    assert names[:9] == ["mixlab", "lan", "kvm1", "front", "svc", "back", "proxy", "api", "router"]
    proxy = next(s for s in result if isinstance(s, types.DocumentSymbol) and s.name == "proxy")
    assert [c.name for c in proxy.children or []] == ["nic eth0 on front address 188.64.100.2",
                                                      "nic eth1 on back address 10.10.103.2"]


async def test_garbage_never_kills_the_server(client: LanguageClient, tmp_path):
    path = tmp_path / "g.topo"
    garbage = "vm {{{ }} on on on\n\x00\x01 é \U0001F600 expect -> !-> \"unterminated\n" * 30 + "}" * 5
    await _open(client, path, garbage)
    doc = types.TextDocumentIdentifier(_uri(path))
    for line in (0, 1, 5, 500):
        for character in (0, 3, 10, 10_000):
            position = types.Position(line, character)
            await client.text_document_hover_async(types.HoverParams(doc, position))
            await client.text_document_completion_async(types.CompletionParams(doc, position))
            await client.text_document_definition_async(types.DefinitionParams(doc, position))
    await client.text_document_formatting_async(types.DocumentFormattingParams(
        doc, types.FormattingOptions(tab_size=4, insert_spaces=True)))
    await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
    _close(client, path)
    assert client.error is None
    # Still serving: a clean file still gets its (empty) diagnostics.
    assert await _open(client, EXAMPLES_NAT) == []
    _close(client, EXAMPLES_NAT)


# --- a server whose feature code raises: a log message, not a dead server ----------------

_BROKEN_HOVER = ("import topoc.lsp.features as f\n"
                 "def hover(*args):\n    raise RuntimeError('boom from a test')\n"
                 "f.hover = hover\n"
                 "from topoc.lsp.server import serve\nserve()\n")


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-c", _BROKEN_HOVER]))
async def broken_client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("neovim"), root_uri=Path.cwd().as_uri()))
    yield
    await lsp_client.shutdown_session()


async def test_internal_error_becomes_a_log_message(broken_client: LanguageClient):
    await _open(broken_client, EXAMPLES_NAT)
    doc = types.TextDocumentIdentifier(_uri(EXAMPLES_NAT))
    result = await broken_client.text_document_hover_async(types.HoverParams(doc, types.Position(10, 9)))
    assert result is None
    assert any("boom from a test" in m.message and m.type == types.MessageType.Error
               for m in broken_client.log_messages)
    where = _position_of(_read(EXAMPLES_NAT), "on natnet address", 4)
    defn = await broken_client.text_document_definition_async(types.DefinitionParams(doc, where))
    assert isinstance(defn, list) and len(defn) == 1  # everything else still answers


async def test_shutdown_and_exit_end_the_process():
    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    await client.start_io(*SERVER)
    await client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities()))
    await client.shutdown_session()
    assert client._server is not None and client._server.returncode == 0
    await client.stop()


async def test_positions_follow_the_negotiated_encoding(tmp_path):
    """A client that asks for UTF-8 gets byte offsets: after two emoji (4 bytes, 2 UTF-16
    units and 1 character each) the column differs in each encoding."""
    from pytest_lsp.client import make_test_lsp_client

    path = tmp_path / "e.topo"
    text = 'lab x\nhost h {\n    nic on lan\n}\nvm v on h {\n    disk "😀😀" extra\n}\n'
    client = make_test_lsp_client()
    await client.start_io(*SERVER)
    result = await client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf8]))))
    got = await _open(client, path, text)
    await client.shutdown_session()
    await client.stop()
    assert result.capabilities.position_encoding == types.PositionEncodingKind.Utf8
    line = text.split("\n")[5]
    column = line.index("extra")  # 0-based, in characters
    assert [(d.range.start.line, d.range.start.character) for d in got if d.code == "syntax-error"] == \
        [(5, len(line[:column].encode("utf-8")))]

