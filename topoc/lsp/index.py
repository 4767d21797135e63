"""The symbol index of one document: where every name is defined and used.

It is built from the syntax tree alone (topoc.front.syntax), so it exists even when
lowering or the checks report errors. Two namespaces, as in the language: networks, and
nodes (hosts, VMs and externals share one). A use refers by text; whether a definition
of that name exists is decided when it is looked up, so an undefined name still has its
occurrences (and can be renamed into existence).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from topoc.front.span import Span
from topoc.front.syntax import Block, Statement, SyntaxTree, Token

NETWORK, NODE = "network", "node"

# What a block's header names, per block kind.
_BLOCK_NAMESPACE = {"network": NETWORK, "host": NODE, "vm": NODE, "external": NODE}


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One name in the text: its namespace, the name, where, and whether it defines it.
    `role` says what the position wants (a network, a host, a vm, or any node) and is
    what completion and hover use."""

    namespace: str
    name: str
    span: Span
    definition: bool
    role: str  # "network", "host", "vm", "external", "node"


@dataclass
class SymbolIndex:
    occurrences: list[Occurrence] = field(default_factory=list)  # sorted by position
    definitions: dict[tuple[str, str], Occurrence] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # node name -> host/vm/external
    _starts: list[tuple[int, int]] = field(default_factory=list)

    def at(self, line: int, column: int) -> Occurrence | None:
        """The occurrence covering 1-based (line, column), or ending right there (the
        cursor just after a name is still on it)."""
        i = bisect.bisect_right(self._starts, (line, column)) - 1
        if i < 0:
            return None
        occ = self.occurrences[i]
        s = occ.span
        if s.line == line and s.column <= column <= s.end_column:
            return occ
        return None

    def definition(self, namespace: str, name: str) -> Occurrence | None:
        return self.definitions.get((namespace, name))

    def uses(self, namespace: str, name: str) -> list[Occurrence]:
        """Every occurrence of the name, the definition included, in source order."""
        return [o for o in self.occurrences if o.namespace == namespace and o.name == name]

    def names(self, role: str) -> list[str]:
        """Defined names that fit a role, in source order."""
        found = []
        for (namespace, name), occ in self.definitions.items():
            wanted = namespace == NETWORK if role == "network" else \
                namespace == NODE and role in ("node", self.kinds.get(name))
            if wanted:
                found.append((occ.span, name))
        return [name for _, name in sorted(found)]


def _add(index: SymbolIndex, namespace: str, token: Token, definition: bool, role: str,
         name: str | None = None, span: Span | None = None) -> None:
    index.occurrences.append(Occurrence(namespace, name if name is not None else token.text,
                                        span if span is not None else token.span, definition, role))


def _statement(index: SymbolIndex, stmt: Statement) -> None:
    tokens = stmt.tokens
    if stmt.kind == "nic":
        for i, tok in enumerate(tokens[:-1]):
            if tok.kind == "on":
                nxt = tokens[i + 1]
                if nxt.kind == "WORD":
                    _add(index, NETWORK, nxt, False, "network")
                break
    elif stmt.kind == "forward" and len(tokens) >= 5 and tokens[4].kind == "WORD":
        target = tokens[4]
        name = target.text.partition(":")[0]
        if name:
            _add(index, NODE, target, False, "vm", name, target.span.sub(0, len(name)))
    elif stmt.kind == "expect":
        for tok in (tokens[1:2] + tokens[3:4]):
            if tok.kind == "WORD" and not tok.text[:1].isdigit():
                _add(index, NODE, tok, False, "node")


def build_index(tree: SyntaxTree) -> SymbolIndex:
    index = SymbolIndex()
    for item in tree.items:
        if isinstance(item, Block):
            name = item.name
            namespace = _BLOCK_NAMESPACE[item.kind]
            if name.kind == "WORD":
                _add(index, namespace, name, True, item.kind)
                if namespace == NODE:
                    index.kinds.setdefault(name.text, item.kind)
            for host in item.on_hosts:  # `on kvm1` or `on kvm1, kvm2`, each name narrowed
                if host.kind == "WORD":
                    _add(index, NODE, host, False, "host")
            for stmt in item.body:
                _statement(index, stmt)
        else:
            _statement(index, item)
    index.occurrences.sort(key=lambda o: (o.span.line, o.span.column))
    for occ in index.occurrences:
        if occ.definition:
            index.definitions.setdefault((occ.namespace, occ.name), occ)
    index._starts = [(o.span.line, o.span.column) for o in index.occurrences]
    return index
