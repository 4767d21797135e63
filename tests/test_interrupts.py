"""SIGINT and SIGTERM: exit 130 / 143 without a traceback, staging folders cleaned up;
and a later build removes the stale staging folders of killed builds that prove to be
topoc's, and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

from topoc.backends.writer import MANIFEST, STAGING_MARKER, remove_stale_staging, write_artifacts

sys.path.insert(0, str(ROOT / "bench"))
from gen import generate_lab  # noqa: E402

FILES = {"host/up.sh": "#!/bin/sh\necho up\n", "a.txt": "a\n"}


def _dead_pid() -> int:
    """A pid that no process has now: a child that has been waited for."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _stale(parent: Path, name: str, pid: int, proof: str | None, kind: str = "new",
           suffix: str = "abc123") -> Path:
    folder = parent / f".{name}.{kind}-{pid}-{suffix}"
    folder.mkdir()
    (folder / "host").mkdir()
    (folder / "host" / "up.sh").write_text("#!/bin/sh\n")
    if proof == "marker":
        (folder / STAGING_MARKER).write_text(json.dumps({"generator": "topoc", "pid": pid}))
    elif proof == "manifest":
        (folder / MANIFEST).write_text(json.dumps({"generator": "topoc", "files": {}}))
    return folder


def test_a_build_removes_stale_staging_that_is_provably_topocs(tmp_path: Path) -> None:
    dead = _dead_pid()
    marked = _stale(tmp_path, "out", dead, "marker")
    swapped = _stale(tmp_path, "out", dead, "manifest", "old", "xyz")  # a previous output
    foreign = _stale(tmp_path, "out", dead, None, suffix="foreign")
    live = _stale(tmp_path, "out", os.getppid(), "marker")  # a build still running
    other_target = _stale(tmp_path, "other", dead, "marker")
    (tmp_path / f".out.new-{dead}-link").symlink_to(marked)
    write_artifacts(FILES, tmp_path / "out", "lab.topo")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert marked.name not in left and swapped.name not in left
    assert foreign.exists() and live.exists() and other_target.exists(), left
    assert (tmp_path / f".out.new-{dead}-link").is_symlink()
    assert (tmp_path / "out" / "a.txt").read_text() == "a\n"
    assert not (tmp_path / "out" / STAGING_MARKER).exists(), "the marker must not reach the output"


def test_removal_keeps_the_proof_to_the_end(tmp_path: Path) -> None:
    """A removal cut short still leaves a folder that proves to be topoc's."""
    dead = _dead_pid()
    folder = _stale(tmp_path, "out", dead, "manifest")
    assert remove_stale_staging(tmp_path / "out") == [folder]
    assert not folder.exists()


# A build whose writer is hit by a signal of its own after the 20th file: deterministic,
# in the middle of filling the staging folder.
KILL_MIDWAY = """
import os, signal, sys
from topoc.backends import writer
from topoc import cli
real, count = writer._write_file, [0]
def write_file(path, data):
    count[0] += 1
    if count[0] == 20:
        os.kill(os.getpid(), signal.{signal})
    real(path, data)
writer._write_file = write_file
sys.argv = ["topoc", "build", "-o", "out", "lab.topo", "--target", "libvirt,host"]
cli.main()
"""


@pytest.mark.parametrize("signame, code, word", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_signal_midway_exits_128_plus_n_and_cleans_up(tmp_path: Path, signame: str, code: int, word: str) -> None:
    (tmp_path / "lab.topo").write_text(generate_lab(200))
    # A previous output, which must survive untouched.
    first = subprocess.run([sys.executable, "-m", "topoc", "build", "-o", "out", "lab.topo"],
                           cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)
    assert first.returncode == 0, first.stderr
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    result = subprocess.run([sys.executable, "-c", KILL_MIDWAY.replace("{signal}", signame)],
                            cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == code, result.stderr
    assert result.stderr.strip() == f"topoc: {word}", result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.topo", "out"], "staging left behind"
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_at_any_moment_of_a_real_build(tmp_path: Path, signum: int, code: int) -> None:
    """The real command, signalled at a spread of moments: it finishes (0) or stops with
    128 + N, never a traceback, "Aborted!" or exit 1, never a staging folder left."""
    (tmp_path / "lab.topo").write_text(generate_lab(1000))
    seen = set()
    for delay in (0.4, 0.7, 1.0, 1.3, 1.7, 2.2):
        process = subprocess.Popen([sys.executable, "-m", "topoc", "build", "-o", "out", "lab.topo"],
                                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
        seen.add(process.returncode)
        left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out."))
        assert left == [], f"staging left after a signal at {delay} s: {left}"
        if process.returncode == -signum and err == "":
            # Killed by the default handler before the interpreter ran topoc at all (a
            # loaded machine): nothing had started, and a shell shows 128 + N as well.
            continue
        assert process.returncode in (0, code), (process.returncode, err)
        assert "Traceback" not in err and "Aborted" not in err, err
    assert code in seen, "no run was actually interrupted: the build is too fast for the delays"
