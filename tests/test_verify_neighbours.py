"""verify's room in the kernel's shared neighbour tables (topoc.verify.netns.NeighbourRoom):
ARP's for IPv4, NDP's for IPv6, each with its own gc_thresh limits, raised for a large
lab and put back afterwards. The limits are files here (the kernel's are in
/proc/sys/net/ipv{4,6}/neigh/default, writable by root only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from topoc.compiler import compile_source
from topoc.model.family import IPV4, IPV6
from topoc.verify import netns


@pytest.fixture
def limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    tables = {}
    for family in (IPV4, IPV6):
        folder = tmp_path / family.title
        folder.mkdir()
        (folder / "gc_thresh2").write_text("512\n")
        (folder / "gc_thresh3").write_text("1024\n")
        tables[family] = folder
    monkeypatch.setattr(netns, "NEIGH_LIMITS_BY_FAMILY", tables)
    return tables


def test_the_ndp_table_is_enlarged_for_a_large_lab_and_restored(limits: dict) -> None:
    room = netns.NeighbourRoom(3000, family=IPV6)
    with room:
        assert (limits[IPV6] / "gc_thresh3").read_text() == str(2 * (3000 + 1024))
        assert (limits[IPV6] / "gc_thresh2").read_text() == str(3000 + 1024)
        assert (limits[IPV4] / "gc_thresh3").read_text() == "1024\n"  # ARP's untouched
    note = room.note()
    assert note is not None and note.startswith("the kernel's IPv6 neighbour (NDP) table")
    assert (limits[IPV6] / "gc_thresh3").read_text() == "1024"
    assert (limits[IPV6] / "gc_thresh2").read_text() == "512"


def test_a_small_lab_leaves_the_limits_alone(limits: dict) -> None:
    with netns.NeighbourRoom(100, family=IPV6) as room:
        pass
    assert room.note() is None
    assert (limits[IPV6] / "gc_thresh3").read_text() == "1024\n"


def test_entries_are_counted_per_family() -> None:
    source = "lab n\nhost kvm1 {\n}\nnetwork iso on kvm1 {\n    mode isolated\n" \
             "    address 10.0.0.1/24\n    address fd00::1/64\n}\n" + "".join(
                 f"vm v{i} on kvm1 {{\n    nic eth0 on iso address 10.0.0.{i + 10} "
                 f"address fd00::{i + 10:x}\n}}\n" for i in range(30))
    result = compile_source(source, "n.topo")
    assert result.lab is not None, [d.message for d in result.diagnostics]
    lab = result.lab
    nodes = len(lab.nodes)
    assert netns.neighbour_entries_needed(lab, IPV4) == 2 * nodes * (30 + 1)
    # IPv6 counts each nic's link-local address too.
    assert netns.neighbour_entries_needed(lab, IPV6) == 2 * nodes * (30 + 1 + 30)
