"""Input that must not break topoc: huge integers, special files, oversized sources.

Every case runs the real command in a subprocess (exit codes and tracebacks are what
an in-process runner would hide) with a timeout, so a hang fails instead of blocking.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES

from topoc.compiler import MAX_SOURCE_BYTES, compile_source

TOPOC = [sys.executable, "-m", "topoc"]
NAT = (EXAMPLES / "nat.topo").read_text(encoding="utf-8")
HUGE = "9" * 5000  # past CPython's 4,300-digit limit for int()


def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOPOC, *args], capture_output=True, text=True, check=False, timeout=timeout, cwd=cwd)


# (what the value is, the text replaced in nat.topo, its replacement, the line it is on)
HUGE_VALUES = [
    ("vcpus", "vcpus 1\n    disk /var/lib/libvirt/images/vm0", f"vcpus {HUGE}\n    disk /var/lib/libvirt/images/vm0", 29),
    ("memory", "memory 1GiB\n    vcpus 1\n    disk /var/lib/libvirt/images/vm0",
     f"memory {HUGE}MiB\n    vcpus 1\n    disk /var/lib/libvirt/images/vm0", 28),
    ("prefix", "188.64.100.1/24", f"188.64.100.1/{HUGE}", 22),
    ("host port", "forward tcp 2222", f"forward tcp {HUGE}", 46),
    ("vm port", "to vm0:22", f"to vm0:{HUGE}", 46),
    ("mtu", "    dns on\n", f"    dns on\n    mtu {HUGE}\n", 25),
]


@pytest.mark.parametrize("what, old, new, line", HUGE_VALUES, ids=[h[0] for h in HUGE_VALUES])
def test_integers_of_thousands_of_digits_are_invalid_values(what, old, new, line) -> None:
    assert old in NAT
    source = NAT.replace(old, new, 1)
    result = compile_source(source, "huge.topo")
    codes = [(d.code, d.span.line) for d in result.diagnostics]
    assert codes == [("invalid-value", line)], codes
    message = result.diagnostics[0].message
    assert len(message) < 200, message  # the value is abbreviated, not quoted whole


@pytest.mark.parametrize("command", [["check"], ["check", "--format", "json"], ["build", "-o", "out"],
                                     ["reach"]])
def test_huge_integers_exit_1_without_a_traceback(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "huge.topo"
    path.write_text(NAT.replace("vcpus 1", f"vcpus {HUGE}", 1), encoding="utf-8")
    result = run(*command, str(path), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "invalid-value" in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["fmt", "--check"], ["fmt"]])
def test_fmt_lays_out_a_file_with_huge_integers(tmp_path: Path, command: list[str]) -> None:
    """fmt formats what parses (a bad value is check's business): no traceback, and the
    already canonical file is left as it is."""
    path = tmp_path / "huge.topo"
    source = NAT.replace("vcpus 1", f"vcpus {HUGE}", 1)
    path.write_text(source, encoding="utf-8")
    result = run(*command, str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert path.read_text(encoding="utf-8") == source


def test_the_one_digit_parser_guards_int() -> None:
    """`str.isdigit` is true for superscripts, which int() refuses; and the length is
    checked before int() ever sees the digits."""
    from topoc.front.values import digits as _digits
    assert _digits("2\u00b2", 32) is None
    assert _digits(HUGE, 10**9) is None
    assert _digits("0" * 5000 + "24", 32) == 24
    assert _digits("33", 32) is None and _digits("32", 32) == 32 and _digits("", 32) is None


def _fifo(d: Path) -> Path:
    os.mkfifo(d / "pipe.topo")
    return d / "pipe.topo"


def _socket(d: Path) -> Path:
    path = d / "sock.topo"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # the socket file stays after close
    server.close()
    return path


def _sparse(d: Path) -> Path:
    path = d / "huge.topo"
    with path.open("wb") as f:
        f.truncate(MAX_SOURCE_BYTES + 1)
    return path


def _symlink_to_zero(d: Path) -> Path:
    (d / "zero.topo").symlink_to("/dev/zero")
    return d / "zero.topo"


SPECIAL = [
    ("dev-zero", lambda d: Path("/dev/zero"), "is a character device, not a regular file"),
    ("symlink-to-dev-zero", _symlink_to_zero, "is a character device, not a regular file"),
    ("fifo", _fifo, "is a FIFO (named pipe), not a regular file"),
    ("socket", _socket, "not a regular file"),
    ("over-64-MiB", _sparse, "topoc reads sources of at most 64 MiB"),
]


@pytest.mark.parametrize("command", [["check"], ["check", "--format", "json"], ["fmt", "--check"],
                                     ["fmt"], ["build"], ["reach"]])
@pytest.mark.parametrize("name, make, message", SPECIAL, ids=[s[0] for s in SPECIAL])
def test_special_and_oversized_files_exit_2_at_once(tmp_path: Path, command, name, make, message) -> None:
    path = make(tmp_path)
    result = run(*command, str(path), cwd=tmp_path, timeout=30)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("topoc: error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_source_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    """The limit is inclusive: a file of MAX_SOURCE_BYTES (comments) is read and checked."""
    path = tmp_path / "big.topo"
    body = NAT.encode()
    padding = MAX_SOURCE_BYTES - len(body)
    line = b"#" * 1023 + b"\n"
    path.write_bytes(body + line * (padding // len(line)) + b"#" * (padding % len(line)))
    assert path.stat().st_size == MAX_SOURCE_BYTES
    from topoc.compiler import read_source
    assert len(read_source(str(path))) == MAX_SOURCE_BYTES
