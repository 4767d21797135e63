"""Shared fixtures: golden files with an update switch, paths, and tool checks.

Golden files: `golden.check(path, actual)` compares text with the file at `path`
(relative to tests/golden/) and fails with a unified diff. Run
`pytest --update-golden` (or `make test UPDATE_GOLDEN=1`) to rewrite them, then
review the diff like code.
"""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
IN_CI = os.environ.get("CI") == "true"

# The Debian guests of `make e2e` (an image build, then minutes of boots under TCG) are not
# part of `make test`: collected only when TOPOC_E2E=1, so nothing is skipped in CI.
collect_ignore = [] if os.environ.get("TOPOC_E2E") == "1" else ["test_e2e_debian.py"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from the current output")


class Golden:
    def __init__(self, update: bool) -> None:
        self.update = update

    def check(self, relative: str | Path, actual: str) -> None:
        path = GOLDEN / relative
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_text(encoding="utf-8") != actual:
                path.write_text(actual, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"golden file {path.relative_to(ROOT)} is missing; "
                        "run pytest --update-golden and review it")
        expected = path.read_text(encoding="utf-8")
        if expected != actual:
            diff = "".join(difflib.unified_diff(
                expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                fromfile=f"{path.relative_to(ROOT)} (golden)", tofile="actual"))
            pytest.fail(f"output differs from the golden file:\n{diff}\n"
                        "(run pytest --update-golden to accept it, then review the diff)")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    update = request.config.getoption("--update-golden") or os.environ.get("UPDATE_GOLDEN") == "1"
    return Golden(bool(update))


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.topo"))


def require_tool(name: str) -> str:
    """The path of a system tool; skip (saying why) when it is missing, fail in CI where
    the set-up must have installed it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make setup installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        message = "needs root for network namespaces"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


VERIFY_PREFIX = f"tvt{os.getpid()}x"


def verify_namespaces() -> set[str]:
    """The namespaces `topoc verify` made in this test process (named VERIFY_PREFIX...)."""
    import subprocess

    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(VERIFY_PREFIX)}


@pytest.fixture
def verify_environment(monkeypatch: pytest.MonkeyPatch):
    """Root and verify's tools, and a check that verify leaves no namespace behind.

    Every namespace verify makes here starts with VERIFY_PREFIX (CLI subprocesses inherit
    TOPOC_VERIFY_PREFIX too), so the check sees only this run's, not other tests'."""
    require_root()
    for tool in ("ip", "nft", "fping", "sysctl"):
        require_tool(tool)
    monkeypatch.setenv("TOPOC_VERIFY_PREFIX", VERIFY_PREFIX)
    before = verify_namespaces()
    yield
    assert verify_namespaces() == before, "verify left network namespaces behind"



@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test its own topoc state folder: test:///default is kept there between topoc
    commands (topoc.deploy.testhost), so without this, tests would see each other's labs."""
    monkeypatch.setenv("TOPOC_STATE_DIR", str(tmp_path_factory.mktemp("state")))


