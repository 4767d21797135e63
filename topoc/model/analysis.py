"""The analysis of one lab: the lab, the names whose lowering failed, and the facts
derived from it (its topology, its reachability engine), each computed at most once.

The topology and the engine are per address family (topoc.model.family): `topology`
and `engine` are IPv4's, `topology_in(family)` / `engine_in(family)` either's.

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

from topoc.model.family import IPV4, Family
from topoc.model.ir import Lab

if TYPE_CHECKING:
    from topoc.model.reach import Engine
    from topoc.model.topology import Topology

T = TypeVar("T")


class Analysis:
    __slots__ = ("_engines", "_families", "_memo", "_topologies", "lab", "poisoned")

    def __init__(self, lab: Lab, poisoned: Iterable[str] = ()) -> None:
        self.lab = lab
        self.poisoned: frozenset[str] = frozenset(poisoned)
        self._topologies: dict[Family, Topology] = {}
        self._engines: dict[Family, Engine] = {}
        self._families: tuple[Family, ...] | None = None
        self._memo: dict[str, object] = {}

    @property
    def families(self) -> tuple[Family, ...]:
        """The address families the lab uses (IPv4 first), computed once."""
        if self._families is None:
            self._families = self.lab.families
        return self._families

    def topology_in(self, family: Family) -> Topology:
        """The lab's wiring facts in one family (topoc.model.topology), built on first use."""
        topology = self._topologies.get(family)
        if topology is None:
            from topoc.model.topology import Topology

            topology = self._topologies[family] = Topology(self.lab, family)
        return topology

    def engine_in(self, family: Family) -> Engine:
        """The reachability engine of one family (topoc.model.reach), built on first use."""
        engine = self._engines.get(family)
        if engine is None:
            from topoc.model.reach import Engine

            engine = self._engines[family] = Engine(self.topology_in(family))
        return engine

    @property
    def topology(self) -> Topology:
        """IPv4's wiring facts."""
        return self.topology_in(IPV4)

    @property
    def engine(self) -> Engine:
        """IPv4's reachability engine."""
        return self.engine_in(IPV4)

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
