"""The writer: atomic replacement, stale files removed, the manifest, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from topoc import __version__

from topoc.backends import writer
from topoc.backends.writer import MANIFEST, WriteError, read_manifest, write_artifacts

FIRST = {"libvirt/networks/a.xml": "<network/>\n", "libvirt/README.txt": "hello & <bye>\n",
         "host/up.sh": "#!/bin/sh\necho up\n"}
SECOND = {"libvirt/networks/b.xml": "<network>b</network>\n", "libvirt/README.txt": "again\n"}


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def siblings(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def test_writes_every_file_and_a_manifest(tmp_path):
    out = tmp_path / "lab"
    assert write_artifacts(FIRST, out, "x.topo") == out.resolve()
    files = snapshot(out)
    assert set(files) == set(FIRST) | {MANIFEST}
    for path, text in FIRST.items():
        assert files[path] == text.encode()
    document = json.loads(files[MANIFEST])
    assert document["source"] == "x.topo" and document["topoc_version"] == __version__
    assert document["files"] == {
        path: {"sha256": hashlib.sha256(text.encode()).hexdigest(), "bytes": len(text.encode())}
        for path, text in FIRST.items()}
    assert read_manifest(out) == document
    assert siblings(tmp_path) == ["lab"], "no staging directory is left behind"


def test_modes_scripts_are_executable_other_files_not(tmp_path):
    out = tmp_path / "lab"
    write_artifacts(FIRST, out, "x.topo")
    assert stat.S_IMODE(os.stat(out / "host/up.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "libvirt/README.txt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755


def test_a_rebuild_replaces_everything_and_drops_stale_files(tmp_path):
    out = tmp_path / "lab"
    write_artifacts(FIRST, out, "x.topo")
    write_artifacts(SECOND, out, "x.topo")
    assert set(snapshot(out)) == set(SECOND) | {MANIFEST}
    assert siblings(tmp_path) == ["lab"]


def test_same_artifacts_give_byte_identical_output(tmp_path):
    write_artifacts(FIRST, tmp_path / "one", "x.topo")
    write_artifacts(dict(reversed(list(FIRST.items()))), tmp_path / "two", "x.topo")
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")


def test_the_fallback_without_renameat2_also_replaces(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    out = tmp_path / "lab"
    write_artifacts(FIRST, out, "x.topo")
    write_artifacts(SECOND, out, "x.topo")
    assert set(snapshot(out)) == set(SECOND) | {MANIFEST}
    assert siblings(tmp_path) == ["lab"]


def test_a_failure_while_writing_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    out = tmp_path / "lab"
    write_artifacts(FIRST, out, "x.topo")
    before = snapshot(out)
    real = writer._write_file
    calls = []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 2:  # the second file: the first is already on disk
            raise OSError(28, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(writer, "_write_file", failing)
    with pytest.raises(WriteError, match="No space left on device.*previous output is unchanged"):
        write_artifacts(SECOND, out, "x.topo")
    assert snapshot(out) == before
    assert siblings(tmp_path) == ["lab"], "the staging directory is cleaned up"


def test_a_failure_in_the_final_switch_restores_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "lab"
    write_artifacts(FIRST, out, "x.topo")
    before = snapshot(out)
    monkeypatch.setattr(writer, "_exchange", lambda a, b: False)
    real_rename = os.rename

    def rename(src, dst):
        if ".new-" in str(src):
            raise OSError(5, "Input/output error", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(writer.os, "rename", rename)
    with pytest.raises(WriteError):
        write_artifacts(SECOND, out, "x.topo")
    assert snapshot(out) == before
    assert siblings(tmp_path) == ["lab"]


def test_refuses_to_replace_a_directory_that_is_not_topoc_output(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "precious.txt").write_text("keep me")
    with pytest.raises(WriteError, match="not a topoc output"):
        write_artifacts(FIRST, home, "x.topo")
    assert snapshot(home) == {"precious.txt": b"keep me"}


def test_an_empty_existing_directory_is_fine(tmp_path):
    (tmp_path / "lab").mkdir()
    write_artifacts(FIRST, tmp_path / "lab", "x.topo")
    assert read_manifest(tmp_path / "lab") is not None


def test_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "lab").write_text("x")
    with pytest.raises(WriteError, match="not a directory"):
        write_artifacts(FIRST, tmp_path / "lab", "x.topo")


def test_unwritable_parent_is_a_write_error(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "lab"  # a path below a file cannot be created, even by root
    else:
        tmp_path.chmod(0o500)
        target = tmp_path / "lab"
    with pytest.raises(WriteError, match="cannot create"):
        write_artifacts(FIRST, target, "x.topo")


@pytest.mark.parametrize("path", ["/etc/passwd", "../up.sh", "a/../../b", "a//b", "./a",
                                  "manifest.json", "a\\b", ""])
def test_artifact_paths_must_stay_inside(tmp_path, path):
    with pytest.raises(ValueError, match="not a plain relative path"):
        write_artifacts({path: "x"}, tmp_path / "lab", "x.topo")
    assert not (tmp_path / "lab").exists()


def test_manifest_lists_one_file_per_line_in_order(tmp_path):
    write_artifacts(FIRST, tmp_path / "lab", "x.topo")
    lines = (tmp_path / "lab" / MANIFEST).read_text().splitlines()
    listed = [line.split('"')[1] for line in lines if line.startswith('    "')]
    assert listed == sorted(FIRST)
