"""The parts of deploy that need no libvirt: ownership records on disk and the XML facts
a plan compares (pure functions)."""

from __future__ import annotations

import pytest

from topoc.deploy import facts as dx
from topoc.deploy.records import (FileRecords, MemoryRecords, Owned, Record, RecordError,
                                  default_state_dir, records_for)

URI = "qemu:///system?socket=/tmp/x/libvirt-sock"


def test_a_record_survives_a_round_trip_on_disk(tmp_path):
    store = FileRecords(URI, tmp_path)
    assert store.load("lab").empty
    record = Record("lab", URI, {"lab-net": Owned("u-1", "<network/>")}, {"lab-vm": Owned("u-2", None)})
    store.save(record)
    assert store.load("lab") == record
    # One directory per connection URI, the URI quoted into a single path component.
    assert [p.name for p in tmp_path.iterdir()] == ["qemu%3A%2F%2F%2Fsystem%3Fsocket%3D%2Ftmp%2Fx%2Flibvirt-sock"]
    store.save(Record("lab", URI))
    assert not (store.directory / "lab.json").exists(), "an empty record leaves no file"


def test_a_damaged_record_is_an_error_that_says_where(tmp_path):
    store = FileRecords(URI, tmp_path)
    store.directory.mkdir(parents=True)
    (store.directory / "lab.json").write_text("{not json")
    with pytest.raises(RecordError, match="lab.json: not a topoc ownership record"):
        store.load("lab")


def test_one_topoc_at_a_time_per_lab(tmp_path):
    store = FileRecords(URI, tmp_path)
    with store.lock("lab"):
        with pytest.raises(RecordError, match="another topoc is changing lab lab"):
            with FileRecords(URI, tmp_path).lock("lab"):
                pass
        with FileRecords(URI, tmp_path).lock("other"):
            pass


def test_where_records_live(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPOC_STATE_DIR", str(tmp_path))
    assert default_state_dir() == tmp_path
    monkeypatch.delenv("TOPOC_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "topoc"
    assert isinstance(records_for("test:///default"), MemoryRecords)
    assert isinstance(records_for("qemu:///system"), FileRecords)


NET = """<network>
  <name>lab-front</name>
  <forward mode='nat' dev='eth0'/>
  <bridge name='front0' stp='off' delay='0'/>
  <ip address='10.1.1.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='10.1.1.100' end='10.1.1.200'/>
      <host mac='52:54:00:00:00:01' name='a' ip='10.1.1.10'/>
      <host mac='52:54:00:00:00:02' name='b' ip='10.1.1.11'/>
    </dhcp>
  </ip>
</network>
"""


def test_network_facts():
    facts = dx.network_facts(NET)
    assert (facts.name, facts.bridge, facts.forward_mode) == ("lab-front", "front0", "nat")
    assert [str(s) for s in facts.subnets] == ["10.1.1.0/24"]
    assert dx.network_facts("<network><name>i</name><ip address='10.2.0.1' prefix='16'/>"
                            "<ip family='ipv6' address='fd00::1' prefix='64'/></network>").subnets[0].prefixlen == 16


def test_dhcp_host_edits_are_found_and_nothing_else_counts_as_one():
    moved = NET.replace("ip='10.1.1.10'", "ip='10.1.1.12'")
    added = NET.replace("</dhcp>", "  <host mac='52:54:00:00:00:03' ip='10.1.1.13'/>\n    </dhcp>")
    removed = NET.replace("      <host mac='52:54:00:00:00:02' name='b' ip='10.1.1.11'/>\n", "")
    assert [(e.command, e.describe()) for e in dx.dhcp_host_changes(NET, moved)] == [
        ("modify", "~52:54:00:00:00:01 -> 10.1.1.12")]
    assert [e.command for e in dx.dhcp_host_changes(NET, added)] == ["add"]
    assert [e.command for e in dx.dhcp_host_changes(NET, removed)] == ["delete"]
    assert dx.dhcp_host_changes(NET, NET) == []
    assert dx.dhcp_host_changes(NET, NET.replace("front0", "front1")) is None
    assert dx.differing_parts(NET, NET.replace("front0", "front1")) == ["bridge"]


def test_same_config_ignores_layout_comments_and_the_source_path():
    marked = ("<domain><name>x</name><metadata><topoc:lab xmlns:topoc='https://topoc.dev/xmlns/libvirt/1' "
              "name='lab' source='{}'/></metadata></domain>")
    assert dx.same_config(marked.format("lab.topo"), "<!-- c -->\n" + marked.format("./lab.topo"))
    assert not dx.same_config(marked.format("a"), marked.replace("name='lab'", "name='other'").format("a"))
    assert dx.lab_marker(marked.format("a")) == "lab"


def test_with_uuid_sets_or_adds_the_uuid():
    assert dx.uuid_of(dx.with_uuid("<network><name>n</name></network>", "u-1")) == "u-1"
    assert dx.uuid_of(dx.with_uuid("<network><name>n</name><uuid>u-0</uuid></network>", "u-1")) == "u-1"
    kept = "<network><name>n</name><uuid>u-1</uuid></network>"
    assert dx.with_uuid(kept, "u-1") is kept


def test_storage_and_tables_round_trip_and_older_records_still_read(tmp_path):
    store = FileRecords(URI, tmp_path)
    record = Record("lab", URI, {"lab-net": Owned("u-1", "<network/>")}, {},
                    pools={"lab-images": Owned("u-3", "<pool/>")},
                    volumes={"lab-images/lab-vm.qcow2": Owned("overlay", "qcow2 overlay of /i.qcow2")},
                    tables={"inet topoc_lab": Owned("d1", "table inet topoc_lab {}\n")})
    store.save(record)
    assert store.load("lab") == record
    assert not Record("lab", URI, pools={"p": Owned("u", None)}).empty
    # A record written before these kinds existed has no such keys: it reads as empty ones.
    plain = Record("lab", URI, {"lab-net": Owned("u-1", "<network/>")})
    assert '"pools"' not in plain.to_json()
    assert Record.from_json(plain.to_json(), "old.json") == plain
