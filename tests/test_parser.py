"""The parser and lowering: IR snapshots of every example, and the corners of the text.

The snapshot is a small deterministic dump of the IR (every field that takes part in
equality, so no spans) in tests/golden/ir/<example>.txt; regenerate with
`pytest --update-golden` and review it like code.
"""

from __future__ import annotations

import dataclasses
import enum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from conftest import ROOT, example_files
from topoc.compiler import compile_source, read_source
from topoc.model.family import IPV4, IPV6
from topoc.model.ir import Mode
from topoc.front.parser import parse


def dump(value: object, indent: str = "") -> str:
    """A stable text form of an IR value: one field a line, spans left out."""
    if dataclasses.is_dataclass(value):
        lines = [type(value).__name__]
        for f in dataclasses.fields(value):
            if not f.compare:
                continue  # spans and indexes: not part of the IR's meaning
            inner = dump(getattr(value, f.name), indent + "  ")
            lines.append(f"{indent}  {f.name}:{'' if inner.startswith(chr(10)) else ' '}{inner}")
        return "\n".join(lines)
    if isinstance(value, tuple):
        if not value:
            return "()"
        return "".join(f"\n{indent}  - {dump(v, indent + '    ')}" for v in value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (IPv4Address, IPv4Interface, IPv4Network)):
        return str(value)
    return repr(value)


def _lower(text: str):
    return compile_source(text, "t.topo", checks=False)


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_ir_snapshot(path, golden):
    result = compile_source(path.read_text(encoding="utf-8"), path.name, checks=False)
    assert result.lab is not None, [d.message for d in result.diagnostics]
    golden.check(Path("ir", f"{path.stem}.txt"), dump(result.lab) + "\n")


def test_every_mode_has_an_example():
    modes = set()
    for path in example_files():
        lab = compile_source(path.read_text(encoding="utf-8"), path.name, checks=False).lab
        modes |= {n.mode for n in lab.networks}
        modes |= {"host-only" for n in lab.networks if n.host_only}
    assert {Mode.ISOLATED, Mode.ROUTED, Mode.NAT, Mode.BRIDGED, "host-only"} <= modes


MINIMAL = """lab t
network lan {
    mode external
    subnet 192.168.1.0/24
}
host kvm1 {
    nic eth0 on lan address 192.168.1.11
}
"""


def test_defaults_and_derivations():
    text = MINIMAL + "network n { mode nat\naddress 10.0.0.1/24\ndhcp 10.0.0.100-10.0.0.200 }\n" \
        "vm web {\n nic on n address 10.0.0.2\n nic on lan\n}\n"
    lab = _lower(text).lab
    web = lab.node("web")
    assert web.host == "kvm1"  # the only host
    assert (web.memory, web.vcpus, web.disk) == (512 * 1024**2, 1, None)
    assert [n.name for n in web.nics] == ["eth0", "eth1"]
    assert web.nics[0].address == IPv4Interface("10.0.0.2/24")  # prefix from the network
    assert all(n.mac_derived and n.mac.startswith("52:54:00:") for n in web.nics)
    net = lab.network("n")
    assert net.host == "kvm1" and net.bridge == "tp-n" and net.bridge_derived
    assert (net.dhcp.start, net.dhcp.end) == (IPv4Address("10.0.0.100"), IPv4Address("10.0.0.200"))


def test_masquerade_is_a_switch_that_defaults_to_on_when_written():
    for written, expected in [("", False), ("masquerade", True), ("masquerade on", True),
                              ("masquerade off", False)]:
        for mode in ("routed via eth0", "open"):
            text = MINIMAL + f"network r {{ mode {mode}\naddress 10.0.0.1/24\n{written}\n}}\n"
            result = _lower(text)
            assert result.ok, [d.message for d in result.diagnostics]
            assert result.lab.network("r").masquerade is expected, (written, mode)


def test_names_may_be_used_before_they_are_defined():
    text = "lab t\nvm web on kvm1 {\n nic on n address 10.0.0.2\n}\nforward tcp 1 to web:2\n" \
        "expect web -> kvm1\nnetwork n on kvm1 {\n mode isolated\n subnet 10.0.0.0/24\n}\n" \
        "host kvm1 {\n nic eth0 on n address 10.0.0.1\n}\n"
    result = _lower(text)
    assert result.ok, [d.message for d in result.diagnostics]


def test_sizes_in_bytes():
    for written, size in [("512MiB", 512 * 1024**2), ("1GiB", 1024**3), ("2G", 2 * 1024**3),
                          ("1GB", 1000**3), ("4096k", 4096 * 1024)]:
        lab = _lower(MINIMAL + f"vm v {{ memory {written} }}\n").lab
        assert lab.node("v").memory == size, written


def test_quoted_disk_path_keeps_spaces_and_hash():
    lab = _lower(MINIMAL + 'vm v {\n disk "/srv/my images/v#1.qcow2"  # a comment\n}\n').lab
    assert lab.node("v").disk == "/srv/my images/v#1.qcow2"


def test_crlf_tabs_and_no_final_newline_lower_the_same():
    plain = MINIMAL + "vm v {\n    memory 1GiB\n}\n"
    odd = plain.replace("\n", "\r\n").replace("    ", "\t").rstrip("\r\n")
    assert _lower(odd).lab == _lower(plain).lab is not None


def test_crlf_positions_are_those_of_the_line():
    text = "lab t\r\nnetwork n {\r\n\tmode isolatd\r\n}\r\n"
    (d,) = [d for d in _lower(text).diagnostics if d.code == "invalid-value"]
    assert (d.span.line, d.span.column, d.span.end_column) == (3, 7, 14)


def test_bom_is_read_as_nothing(tmp_path):
    path = tmp_path / "bom.topo"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert read_source(str(path)) == MINIMAL


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n# comments", "  \t\n# x\n"])
def test_empty_and_comment_only_files_parse(text):
    tree, diagnostics = parse(text, "t.topo")
    assert diagnostics == [] and tree is not None and tree.items == ()
    (d,) = _lower(text).diagnostics
    assert (d.code, d.span.line, d.span.column) == ("missing-statement", 1, 1)


def test_a_very_long_line_is_one_token_with_the_right_span():
    name = "x" * 20000
    result = _lower(f"lab t\nexpect {name} -> {name}\n")
    spans = {(d.span.line, d.span.column, d.span.end_column) for d in result.diagnostics
             if d.code == "undefined-name"}
    assert spans == {(2, 8, 20008), (2, 20012, 40012)}


def test_one_line_blocks_and_comments_are_kept():
    tree, diagnostics = parse("lab t  # the lab\nnetwork n { mode isolated }  # tiny\n", "t.topo")
    assert not diagnostics
    assert [c.text for c in tree.comments] == ["# the lab", "# tiny"]
    assert [c.own_line for c in tree.comments] == [False, False]
    (block,) = [i for i in tree.items if i.kind == "network"]
    assert [s.kind for s in block.body] == ["mode"]


def test_every_syntax_error_is_reported_at_once():
    text = "lab t\nnetwork n {\n mdoe isolated\n}\nhost h {\n nic eth0 on n adress 1.2.3.4\n}\nexpect h =>\n"
    _, diagnostics = parse(text, "t.topo")
    assert [(d.span.line, d.span.column) for d in diagnostics] == [(3, 2), (6, 16), (8, 10)]


def test_the_readme_language_reference_compiles():
    """Every code block of the README's language section, put together, is a valid lab."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The language", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")[1::2]
    assert len(blocks) >= 7
    text = "\n".join(blocks)
    result = _lower(text)
    assert result.ok, [(d.span.line, d.message) for d in result.diagnostics]
    lab = result.lab
    assert {n.name for n in lab.networks} == {"natnet", "lan", "isonet", "routenet", "lan6", "natnet6"}
    assert lab.network("routenet").masquerade and not lab.network("natnet").masquerade
    # The dual-stack example: one address (and subnet, DHCP range) of each family.
    natnet6, lan6 = lab.network("natnet6"), lab.network("lan6")
    assert natnet6.families == lan6.families == (IPV4, IPV6) and not natnet6.nat6
    assert natnet6.dhcp6 is not None and str(natnet6.dhcp6.start) == "fd00:64::1:10"
    assert [str(a) for a in lab.node("vm6").nics[0].addresses] == ["188.64.106.2/24", "fd00:64::2/64"]
    assert [r.family for r in lab.node("router6").routes] == [IPV6]
    assert lab.node("vm0").nics[1].name == "eth1"
    assert lab.network("natnet").domain == "lab.example" and lab.network("natnet").mtu == 1500


def test_the_parser_stops_after_fifty_errors():
    _, diagnostics = parse("lab t\n" + "bogus line\n" * 80, "t.topo")
    assert len(diagnostics) == 51
    assert diagnostics[-1].code == "too-many-errors"
    assert [d.span.line for d in diagnostics[:50]] == list(range(2, 52))


# --- the fast lexer gives lark's contextual lexer's tokens ------------------------------


def _token_stream(tree) -> list[tuple]:
    from lark import Tree

    out: list[tuple] = []

    def walk(node) -> None:
        if isinstance(node, Tree):
            out.append(("tree", node.data))
            for child in node.children:
                walk(child)
            out.append(("end",))
        else:
            out.append((node.type, str(node), node.line, node.column, node.end_line,
                        node.end_column, node.start_pos, node.end_pos))

    walk(tree)
    return out


def _both(text: str):
    from topoc.front.parser import _fast_lark, _lark

    results = []
    for parser in (_lark(), _fast_lark()):
        try:
            results.append(_token_stream(parser.parse(text)))
        except Exception:  # noqa: BLE001 - any failure; parse() then uses lark's lexer
            results.append(None)
    return results


def _repo_topo_files() -> list[Path]:
    return sorted(p for p in ROOT.glob("**/*.topo")
                  if "node_modules" not in p.parts and not any(part.startswith(".") for part in p.parts))


@pytest.mark.parametrize("path", _repo_topo_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_fast_lexer_agrees_with_larks_contextual_lexer(path: Path) -> None:
    text = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
    standard, fast = _both(text if text.endswith("\n") else text + "\n")
    # Where the fast path parses, it gives exactly lark's tokens and tree; where it steps
    # aside (None), parse() falls back to lark's lexer, so only a fast success counts.
    if fast is not None:
        assert fast == standard


FAST_LEXER_EDGES = [
    "lab x\nexpect a->b\n",  # an arrow glued to names
    "lab x\nhost h { }\nvm v on h { vcpus -1 }\n",  # a value starting with `-`
    "lab x\nnetwork n on h { mode nat\n  address 10.0.0.1/24\n  dhcp 10.0.0.5 -10.0.0.9 }\n",
    "lab on\nnetwork on { mode external\n  subnet 10.0.0.0/8 }\n",  # keywords as names
    "# only\n  # comments\n",
    "lab x  # trailing\n\n\n# and more\n",
    'lab x\nhost h { }\nvm v on h { disk "a \\" b # c" }\n',  # quote and hash inside a string
]


@pytest.mark.parametrize("text", FAST_LEXER_EDGES)
def test_fast_lexer_edge_cases(text: str) -> None:
    standard, fast = _both(text)
    if fast is not None:
        assert fast == standard
    assert parse(text, "t.topo")[1] == parse(text, "t.topo")[1]


def test_the_statement_table_matches_the_grammar_and_lowering():
    """Adding a statement is a grammar rule, one entry in topoc.front.statements and one
    function in topoc.front.lower: the three agree on every keyword and every home."""
    import re as _re
    from importlib import resources

    from topoc.front import lower
    from topoc.front.statements import BLOCKS, STATEMENTS, TOP

    grammar = resources.files("topoc.grammar").joinpath("topo.lark").read_text(encoding="utf-8")
    rules = dict(_re.findall(r"^(\w+)_(?:stmt|decl): \"(\w+)\"", grammar, _re.M))
    # A keyword with a `-` is a named terminal (SSH_KEY: "ssh-key"): the rule names it.
    terminals = dict(_re.findall(r"^([A-Z_]+): \"([\w-]+)\"", grammar, _re.M))
    rules.update({rule: terminals[t] for rule, t in
                  _re.findall(r"^(\w+)_(?:stmt|decl): ([A-Z_]+)\b", grammar, _re.M) if t in terminals})
    assert {keyword: keyword for keyword in rules.values()} == {k: k for k in STATEMENTS}
    for block in BLOCKS:
        alternatives = _re.search(rf"^_{block}_stmt: ((?:.|\n\s+\|)*)$", grammar, _re.M)
        assert alternatives is not None, block
        in_grammar = {rules.get(r, r) for r in _re.findall(r"(\w+)_stmt", alternatives.group(1))}
        assert in_grammar == {k for k, s in STATEMENTS.items() if block in s.homes}, block
    block_statements = {k for k, s in STATEMENTS.items() if TOP not in s.homes}
    assert set(lower._STATEMENT_FNS) == block_statements
