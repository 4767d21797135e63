"""`topoc check` as a user runs it: exit codes, text and JSON output, colour rules.

These run the real command in a subprocess (and under a pseudo-terminal for colour),
because terminal detection and exit codes are exactly what an in-process runner fakes.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, GOLDEN

TOPOC = [sys.executable, "-m", "topoc"]
BAD = GOLDEN / "diagnostics" / "many-errors-sorted" / "input.topo"
ANSI = b"\x1b["


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    env.update(extra)
    return env


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TOPOC, *args], capture_output=True, env=_env(**env), timeout=60)


def run_in_terminal(*args: str, **env: str) -> tuple[int, bytes]:
    """Run topoc with stdout and stderr on a pseudo-terminal; (exit code, output)."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen([*TOPOC, *args], stdout=secondary, stderr=secondary,
                               env=_env(TERM="xterm-256color", **env))
    os.close(secondary)
    output = b""
    try:
        while chunk := os.read(primary, 65536):
            output += chunk
    except OSError:  # EIO: the child closed the terminal
        pass
    finally:
        os.close(primary)
    return process.wait(timeout=60), output


def test_clean_examples_exit_0():
    result = run("check", *sorted(str(p) for p in EXAMPLES.glob("*.topo")))
    assert result.returncode == 0, result.stdout.decode()
    last = result.stdout.decode().rstrip().splitlines()[-1]
    # Warnings (the semantic checks') are allowed; errors are not.
    assert last == "no problems found in 6 files" or last.startswith("0 errors, "), last


def test_errors_exit_1_with_every_diagnostic_and_a_summary():
    result = run("check", str(BAD))
    out = result.stdout.decode()
    assert result.returncode == 1
    assert out.count(f"{BAD}:") == 6
    assert out.rstrip().endswith("6 errors, 0 warnings in 1 file")
    assert f"{BAD}:13:12: error: `lots` is not a size  [invalid-value]" in out


@pytest.fixture
def in_case_dir(monkeypatch):
    monkeypatch.chdir(BAD.parent)


def test_text_output_matches_golden(in_case_dir):
    result = subprocess.run([*TOPOC, "check", "input.topo"], capture_output=True, env=_env(),
                            timeout=60)
    expected = (BAD.parent / "expected.txt").read_text(encoding="utf-8")
    assert result.stdout.decode() == expected + "\n6 errors, 0 warnings in 1 file\n"


def test_json_output_matches_golden_and_schema(in_case_dir):
    result = subprocess.run([*TOPOC, "check", "--format", "json", "input.topo"],
                            capture_output=True, env=_env(), timeout=60)
    assert result.returncode == 1
    assert result.stdout.decode() == (BAD.parent / "expected.json").read_text(encoding="utf-8")
    document = json.loads(result.stdout)
    keys = ["severity", "code", "message", "file", "line", "column", "end_line", "end_column", "hint"]
    assert list(document) == ["diagnostics"]
    assert all(list(d) == keys for d in document["diagnostics"])


def test_json_of_a_clean_file_is_an_empty_list():
    result = run("check", "--format", "json", str(EXAMPLES / "nat.topo"))
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"diagnostics": []}


@pytest.mark.parametrize("setup, message", [
    (lambda d: d / "missing.topo", "no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: _write(d / "latin1.topo", b"lab caf\xe9\n"), "not UTF-8 text"),
    (lambda d: _write(d / "binary.topo", b"lab x\x00\n"), "NUL bytes"),
])
def test_environment_problems_exit_2_with_a_message(tmp_path, setup, message):
    path = setup(tmp_path)
    for fmt in ("text", "json"):
        result = run("check", "--format", fmt, str(path))
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert err.startswith("topoc: error: ") and message in err
        assert "Traceback" not in err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_unreadable_file_exits_2(tmp_path):
    path = _write(tmp_path / "secret.topo", b"lab x\n")
    path.chmod(0)
    command = [*TOPOC, "check", str(path)]
    if os.geteuid() == 0:  # root reads everything: drop to `nobody` for this one run
        tmp_path.chmod(0o755)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = subprocess.run(command, capture_output=True, env=_env(), timeout=60)
    assert result.returncode == 2 and b"permission denied" in result.stderr, result.stderr


def test_usage_errors_exit_2():
    assert run("check").returncode == 2
    assert run("check", "--format", "yaml", str(BAD)).returncode == 2
    assert run("frobnicate").returncode == 2


def test_colour_on_a_terminal_only():
    code, output = run_in_terminal("check", str(BAD))
    assert code == 1 and ANSI in output
    piped = run("check", str(BAD))
    assert ANSI not in piped.stdout + piped.stderr


def test_no_color_means_no_escape_codes_at_all():
    code, output = run_in_terminal("check", str(BAD), NO_COLOR="1")
    assert code == 1 and b"error:" in output
    assert ANSI not in output


def test_force_color_colours_a_pipe():
    result = run("check", str(BAD), FORCE_COLOR="1")
    assert ANSI in result.stdout


def test_python_dash_m_and_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.decode().startswith("topoc, version ")


def test_an_unreadable_file_does_not_hide_the_others(tmp_path):
    result = run("check", str(tmp_path / "missing.topo"), str(BAD), str(EXAMPLES / "nat.topo"))
    assert result.returncode == 2
    assert b"missing.topo: no such file" in result.stderr
    out = result.stdout.decode()
    assert f"{BAD}:13:12: error:" in out and out.rstrip().endswith("in 2 files")
