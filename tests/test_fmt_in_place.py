"""`topoc fmt` rewrites files in place safely: temp file beside, fsync, rename, mode kept.

The failure cases run in a private mount namespace (`unshare -m`, root) on a tiny tmpfs:
one too small for a second copy of the file (a full disk), and one remounted read-only.
Either way the original must be byte for byte what it was, the exit code 2 with a
message, no traceback, and no temporary file left behind.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, require_root, require_tool

TOPOC = [sys.executable, "-m", "topoc"]
# nat.topo with its layout spoilt: fmt has something to rewrite.
UNFORMATTED = (EXAMPLES / "nat.topo").read_text(encoding="utf-8").replace("    mode nat", "  mode   nat")


def test_fmt_rewrites_in_place_keeping_mode_and_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.topo"
    real.write_text(UNFORMATTED, encoding="utf-8")
    real.chmod(0o640)
    link = tmp_path / "link.topo"
    link.symlink_to(real.name)
    result = subprocess.run([*TOPOC, "fmt", str(link)], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink(), "the symlink was replaced by a file"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert "  mode   nat" not in real.read_text() and "    mode nat via eth0" in real.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.topo", "real.topo"]


def _in_mount_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    require_root()
    require_tool("unshare")
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-euc", script],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "TOPOC": " ".join(TOPOC), "D": str(tmp_path / "mnt")})


def _padded(size: int) -> bytes:
    """UNFORMATTED plus comment lines, `size` bytes in all."""
    body = UNFORMATTED.encode()
    line = b"# " + b"x" * 97 + b"\n"
    padding = size - len(body)
    return body + line * (padding // len(line)) + b"#" * (padding % len(line) - 1) + b"\n"


@pytest.mark.parametrize("case, setup, message", [
    # 160 KiB of tmpfs, a 100 KB file: its formatted copy cannot fit beside it.
    ("full-disk", "mount -t tmpfs -o size=160k tmpfs \"$D\"; cp \"$D.in\" \"$D/lab.topo\"",
     "No space left on device"),
    ("read-only", ("mount -t tmpfs -o size=1m tmpfs \"$D\"; cp \"$D.in\" \"$D/lab.topo\"; "
                   "mount -o remount,ro \"$D\""), "Read-only file system"),
])
def test_a_failed_rewrite_leaves_the_original_byte_for_byte(tmp_path: Path, case, setup, message) -> None:
    original = _padded(100_000)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt.in").write_bytes(original)
    script = f"""{setup}
set +e
$TOPOC fmt "$D/lab.topo" >"$D.out" 2>"$D.err"
echo $? >"$D.rc"
cp "$D/lab.topo" "$D.after"
ls -A "$D" >"$D.ls"
"""
    done = _in_mount_namespace(script, tmp_path)
    assert done.returncode == 0, done.stderr
    read = lambda suffix: (tmp_path / f"mnt.{suffix}").read_text()
    err = read("err")
    assert read("rc").strip() == "2", (read("out"), err)
    assert err.startswith("topoc: error: cannot rewrite ") and message in err and "unchanged" in err, err
    assert "Traceback" not in err
    assert (tmp_path / "mnt.after").read_bytes() == original
    assert read("ls").split() == ["lab.topo"], "a temporary file was left behind"
