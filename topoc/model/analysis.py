"""The analysis of one lab: the lab, the names whose lowering failed, and the facts
derived from it (its topology, its reachability engine), each computed at most once.

One Analysis is built per compilation and handed to every stage that asks questions
about the lab: the checks, the reach command, the diagram's reach overlay, verify. It
replaces per-process caches keyed on object identity: two labs analysed in one process
never share anything, and dropping the Analysis drops everything derived from it.

`poisoned` holds the names of networks and nodes that were left out of the lab, or are
in it incomplete, because some of their values could not be lowered (that error is
reported once, by the front end). A check reports nothing about a poisoned name: what
it would say could only follow from the error already reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from topoc.model.ir import Lab

if TYPE_CHECKING:
    from topoc.model.reach import Engine
    from topoc.model.topology import Topology

T = TypeVar("T")


class Analysis:
    __slots__ = ("_engine", "_memo", "_topology", "lab", "poisoned")

    def __init__(self, lab: Lab, poisoned: Iterable[str] = ()) -> None:
        self.lab = lab
        self.poisoned: frozenset[str] = frozenset(poisoned)
        self._topology: Topology | None = None
        self._engine: Engine | None = None
        self._memo: dict[str, object] = {}

    @property
    def topology(self) -> Topology:
        """The lab's wiring facts (topoc.model.topology), built on first use."""
        if self._topology is None:
            from topoc.model.topology import Topology

            self._topology = Topology(self.lab)
        return self._topology

    @property
    def engine(self) -> Engine:
        """The reachability engine (topoc.model.reach), built on first use."""
        if self._engine is None:
            from topoc.model.reach import Engine

            self._engine = Engine(self.topology)
        return self._engine

    def memo(self, key: str, build: Callable[[], T]) -> T:
        """A fact a check derives from the lab, computed once per analysis (`key` names
        it: one key, one type)."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]  # type: ignore[return-value]  # one key holds one type

    def sound(self, *names: str | None) -> bool:
        """Whether none of `names` is poisoned."""
        poisoned = self.poisoned
        if not poisoned:  # the common case: a file without errors
            return True
        return not any(name in poisoned for name in names if name is not None)


def analysis_of(subject: Lab | Analysis) -> Analysis:
    """The analysis to ask: `subject` itself, or a fresh one for a bare Lab (callers that
    ask many questions pass the compilation's Analysis, so nothing is computed twice)."""
    return subject if isinstance(subject, Analysis) else Analysis(subject)
