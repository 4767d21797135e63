"""The writer: artifacts {relative path: text} -> an output directory, atomically.

Every file of a build goes to a fresh staging directory beside the target, together
with `manifest.json` (each file's sha256 and size, the source file, topoc's version);
only when all of it is written does the staging directory take the target's place, in
one atomic exchange where the kernel offers it (renameat2 RENAME_EXCHANGE), else in
two renames. So a failed build leaves the previous output exactly as it was, a reader
never sees half an output, and files an earlier build made that this one does not are
gone. The writer refuses to replace a directory that is not a topoc output (one with
files but no topoc manifest), so `-o ~` cannot wipe a home directory.

Staging folders are named `.<target>.new-<pid>-<random>` and hold a marker file
(`.topoc-staging`) until their manifest is written; an interrupted build (SIGINT,
SIGTERM: see topoc.interrupts) removes its own, and every build first removes the stale
ones a killed build left beside its target: only folders that prove to be topoc's (the
marker, or a topoc manifest) and whose process is gone. Anything else of that name is
left alone.

Crash safety is about the process, not power loss: files are not fsync'ed one by one
(a 10,000-VM lab would spend seconds there); the output is a build product that the
next build remakes.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from topoc import __version__
from topoc.interrupts import deferred

MANIFEST = "manifest.json"
GENERATOR = "topoc"
FILE_MODE = 0o644
SCRIPT_MODE = 0o755  # files that start with `#!`
DIR_MODE = 0o755
STAGING_MARKER = ".topoc-staging"


class WriteError(Exception):
    """The output cannot be written (permissions, disk full, not a topoc directory):
    an environment problem, which the CLI reports with exit code 2."""


def write_artifacts(artifacts: Mapping[str, str], out_dir: str | os.PathLike[str],
                    source_file: str) -> Path:
    """Write `artifacts` and a manifest to `out_dir`, replacing what was there."""
    files = {path: artifacts[path].encode("utf-8") for path in sorted(artifacts)}
    for path in files:
        _check_relative_path(path)
    target = Path(out_dir).resolve()
    try:
        _check_replaceable(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
    except OSError as e:
        raise WriteError(f"cannot create {target}: {e.strerror or e}") from None
    staging: Path | None = None
    filling = False
    try:
        with deferred():  # a signal between mkdtemp and the marker would leave no proof
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-{os.getpid()}-",
                                            dir=target.parent))
            _write_marker(staging)
        filling = True
        _fill(staging, files, source_file)
        os.unlink(staging / STAGING_MARKER)  # the manifest is the proof from here on
        _replace(staging, target)
    except OSError as e:
        if staging is not None:
            _remove_staging(staging)
        if not filling:
            raise WriteError(f"cannot create {target}: {e.strerror or e}") from None
        where = f" ({e.filename})" if e.filename else ""
        raise WriteError(f"cannot write {target}: {e.strerror or e}{where}; "
                         "the previous output is unchanged") from None
    except BaseException:
        if staging is not None:
            _remove_staging(staging)
        raise
    return target


def manifest(files: Mapping[str, bytes], source_file: str) -> str:
    """The manifest's text: JSON, sorted, stable, no timestamps (builds are byte-identical),
    one line per file so a diff of two manifests reads as a list of changed files."""
    head = json.dumps({"generator": GENERATOR, "source": source_file,
                       "topoc_version": __version__}, indent=2, sort_keys=True)
    entries = ",\n".join(
        f"    {json.dumps(path)}: "
        f"{json.dumps({'bytes': len(data), 'sha256': hashlib.sha256(data).hexdigest()})}"
        for path, data in sorted(files.items()))
    body = f'  "files": {{\n{entries}\n  }}' if entries else '  "files": {}'
    return f"{head[:-2]},\n{body}\n}}\n"


def read_manifest(out_dir: str | os.PathLike[str]) -> dict | None:
    """The manifest of a topoc output directory, or None when it has none."""
    try:
        document = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("generator") != GENERATOR:
        return None
    return document


# --- staging folders: ours, and the stale ones of killed builds ----------------------


def _write_marker(staging: Path) -> None:
    document = {"generator": GENERATOR, "pid": os.getpid()}
    (staging / STAGING_MARKER).write_text(json.dumps(document) + "\n", encoding="utf-8")


def _remove_staging(path: Path) -> None:
    """Remove a staging folder (or the previous output swapped into it) so that what is
    left, if this is cut short, still proves to be topoc's: everything but the manifest
    and the marker first, then those, then the folder. Signals wait until it is done."""
    with deferred():
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        proofs = {MANIFEST, STAGING_MARKER}
        for entry in sorted(entries, key=lambda e: e.name in proofs):
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass  # best effort: the folder stays, to be removed by the next build
        try:
            os.rmdir(path)
        except OSError:
            pass  # not empty (see above): left for the next build


def _staging_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(target.name)}\.(?:new|old)-(\d+)-[A-Za-z0-9_]+")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OverflowError, ValueError):
        return True  # not a pid at all: keep the folder
    return True


def _proves_topoc(folder: Path, pid: int) -> bool:
    """The marker a build writes first, naming this pid; or a topoc manifest."""
    try:
        marker = json.loads((folder / STAGING_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    if isinstance(marker, dict) and marker.get("generator") == GENERATOR and marker.get("pid") == pid:
        return True
    return read_manifest(folder) is not None


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders that killed builds of `target` left beside it: named
    `.<target>.new-<pid>-...` (or `.old-`), a real folder (not a symlink), proven
    topoc's, and its process gone (a build running right now keeps its own). Returns
    what was removed."""
    pattern = _staging_pattern(target)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(match.group(1)) if len(match.group(1)) <= 10 else -1
        if pid <= 0 or pid == os.getpid() or _alive(pid):
            continue
        folder = Path(entry.path)
        if _proves_topoc(folder, pid):
            _remove_staging(folder)
            removed.append(folder)
    return removed


# --- checks before anything is written -----------------------------------------------


def _check_relative_path(path: str) -> None:
    # A backend bug must not write outside the output directory.
    if (path == MANIFEST or "\\" in path
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise ValueError(f"artifact path {path!r} is not a plain relative path")


def _check_replaceable(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise WriteError(f"{target} exists and is not a directory")
    if read_manifest(target) is None and any(target.iterdir()):
        raise WriteError(f"{target} exists and is not a topoc output (it has no {MANIFEST}); "
                         "refusing to replace it: choose another -o DIR or remove it")


# --- staging -------------------------------------------------------------------------


def _fill(staging: Path, files: Mapping[str, bytes], source_file: str) -> None:
    os.chmod(staging, DIR_MODE)  # mkdtemp makes it 0700
    for directory in sorted({PurePosixPath(p).parent for p in files} - {PurePosixPath(".")}):
        (staging / directory).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(staging / directory, DIR_MODE)
    root = os.fspath(staging)
    # Plain string paths and raw file descriptors: a large lab writes 10,000+ files,
    # and pathlib and buffered files would cost more than the system calls.
    for path, data in files.items():
        _write_file(f"{root}/{path}", data)
    _write_file(f"{root}/{MANIFEST}", manifest(files, source_file).encode("utf-8"))


def _write_file(path: str, data: bytes) -> None:
    mode = SCRIPT_MODE if data.startswith(b"#!") else FILE_MODE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not make a script unrunnable
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


# --- the switch ----------------------------------------------------------------------


def _replace(staging: Path, target: Path) -> None:
    """Put `staging` where `target` is; afterwards `staging` no longer exists."""
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        _remove_staging(staging)  # now holds the previous output
        return
    previous = staging.with_name(staging.name.replace(".new-", ".old-", 1))
    os.rename(target, previous)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(previous, target)
        raise
    _remove_staging(previous)


_RENAME_EXCHANGE = 2  # from <linux/fs.h>
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # a kernel or filesystem without RENAME_EXCHANGE
    raise OSError(err, os.strerror(err), str(b))
