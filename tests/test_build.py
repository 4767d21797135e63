"""`topoc build`: what it writes, that it writes it identically every time, and that a
failing build (errors in the topology, a failing writer) writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import ROOT, example_files
from topoc.backends import writer
from topoc.backends import available_targets
from topoc.cli import cli
from topoc.backends.writer import MANIFEST, read_manifest

NAT = str(ROOT / "examples/nat.topo")
BROKEN = """lab broken
host h {
    nic eth0 on lan address 10.0.0.2
}
network lan {
    mode external
    subnet 10.0.0.0/24
}
network n on h {
    mode nat via eth0
    address 10.1.0.1/24
}
vm v on h {
    nic on nowhere
}
"""


def build(*args: str):
    return CliRunner().invoke(cli, ["build", *args], catch_exceptions=False)


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def broken(tmp_path):
    path = tmp_path / "broken.topo"
    path.write_text(BROKEN)
    return str(path)


@pytest.mark.parametrize("example", example_files(), ids=lambda p: p.name)
def test_every_example_builds_byte_identically_twice(example, tmp_path):
    first = build(str(example), "-o", str(tmp_path / "one"))
    second = build(str(example), "-o", str(tmp_path / "two"))
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")
    again = build(str(example), "-o", str(tmp_path / "one"))
    assert again.exit_code == 0
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")


@pytest.mark.parametrize("example", ["mixed.topo", "nat.topo"])
def test_builds_in_separate_processes_with_different_hash_seeds_are_identical(example, tmp_path):
    # Set and dict-of-set iteration order changes with PYTHONHASHSEED: a backend that
    # iterates unsorted would differ here, not in one process.
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-m", "topoc", "build", str(ROOT / "examples" / example),
                        "-o", str(tmp_path / seed)], check=True, capture_output=True, cwd=ROOT,
                       env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120)
    assert snapshot(tmp_path / "1") == snapshot(tmp_path / "2")


def test_default_output_is_output_slash_lab_with_every_available_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = build(NAT)
    assert result.exit_code == 0, result.output
    out = tmp_path / "output" / "natlab"
    assert f"to output/natlab (targets: {', '.join(available_targets())})" in result.output
    files = set(snapshot(out))
    assert {"libvirt/networks/natnet.xml", "libvirt/domains/vm0.xml", "libvirt/domains/vm1.xml",
            "libvirt/README.txt", MANIFEST} <= files
    manifest = read_manifest(out)
    assert manifest["source"] == NAT
    assert set(manifest["files"]) == files - {MANIFEST}


def test_target_libvirt_writes_only_libvirt_files(tmp_path):
    result = build(NAT, "--target", "libvirt", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert {p.split("/")[0] for p in snapshot(tmp_path / "out")} == {"libvirt", MANIFEST}


def test_unknown_target_is_a_usage_error(tmp_path):
    result = build(NAT, "--target", "libvirt,qemu", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "unknown target qemu" in result.output
    assert not (tmp_path / "out").exists()


def test_a_file_with_errors_writes_nothing_and_exits_1(broken, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = build(broken)
    assert result.exit_code == 1
    assert "nowhere" in result.output and "[undefined-name]" in result.output
    assert not (tmp_path / "output").exists()


def test_a_file_with_errors_leaves_the_previous_output_untouched(broken, tmp_path):
    out = tmp_path / "out"
    assert build(NAT, "-o", str(out)).exit_code == 0
    before = snapshot(out)
    assert build(broken, "-o", str(out)).exit_code == 1
    assert snapshot(out) == before


def test_a_failing_writer_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert build(NAT, "-o", str(out)).exit_code == 0
    before = snapshot(out)

    def disk_full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(writer, "_write_file", disk_full)
    result = build(NAT, "-o", str(out))
    assert result.exit_code == 2
    assert "No space left on device" in result.output and "unchanged" in result.output
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refuses_to_overwrite_a_directory_that_is_not_topoc_output(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = build(NAT, "-o", str(tmp_path))
    assert result.exit_code == 2 and "not a topoc output" in result.output
    assert snapshot(tmp_path) == {"notes.txt": b"mine"}


def test_a_missing_file_is_a_usage_error(tmp_path):
    result = build(str(tmp_path / "nope.topo"))
    assert result.exit_code == 2 and "no such file" in result.output


def test_build_never_imports_libvirt(tmp_path):
    code = ("import sys\n"
            "from topoc.cli import cli\n"
            "try:\n"
            "    cli.main(['build', sys.argv[1], '-o', sys.argv[2]], standalone_mode=False)\n"
            "finally:\n"
            "    assert 'libvirt' not in sys.modules, 'build imported libvirt'\n")
    run = subprocess.run([sys.executable, "-c", code, NAT, str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "libvirt" / "domains" / "vm0.xml").is_file()


def test_a_vm_on_a_lan_its_host_is_not_on_is_an_error_not_a_traceback(tmp_path):
    source = tmp_path / "vmext.topo"
    source.write_text("lab x\nnetwork lan {\n    mode external\n    subnet 10.0.0.0/24\n}\n"
                      "host h {\n}\n"
                      "vm v on h {\n    nic on lan address 10.0.0.5\n}\n")
    result = build(str(source), "-o", str(tmp_path / "out"))
    # The nic-placement check reports it with a span, before the backend's backstop.
    assert result.exit_code == 1
    assert "vmext.topo:9:5" in result.output and "[nic-placement]" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_targets_may_be_repeated_or_comma_separated(tmp_path):
    result = build(NAT, "--target", "host", "--target", "libvirt", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "(targets: libvirt, host)" in result.output  # always in build order
    assert {p.split("/")[0] for p in snapshot(tmp_path / "out")} == {"libvirt", "host", MANIFEST}
