"""Builds the tiny test guest from Debian packages: a kernel and a busybox initramfs.

The kernel is Debian's (linux-image-amd64's vmlinuz); the initramfs holds busybox-static,
the virtio/CD-ROM/iso9660 modules the kernel needs (Debian builds them as modules),
Debian's qemu-guest-agent with its shared libraries, and /init (init.sh), which applies
the NoCloud seed's network-config and runs the agent. Packages come from the machine's
apt sources only (`apt-get download`, then `dpkg-deb -x`: nothing is installed).

The result is cached outside the checkout, in CACHE/<key>/{vmlinuz,initrd.img}, where the
key hashes the package versions apt would fetch and the files the guest is made of: it
is rebuilt only when one of them changes or the folder is missing.

    python tests/guests/tiny.py          # build (or find) it and print the two paths
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("TOPOC_GUEST_CACHE", "/var/cache/topoc-test-guests"))
KERNEL_META = "linux-image-amd64"
PACKAGES = ("busybox-static", "qemu-guest-agent")
# Loaded by /init in this order after their dependencies: PCI virtio transport, nics,
# the console ports (the agent's channel), the CD-ROM on IDE/SATA/virtio-scsi, iso9660.
MODULES = ("virtio_pci", "virtio_net", "virtio_console", "e1000", "ata_piix", "ahci",
           "virtio_scsi", "sr_mod", "isofs")
GUEST_FILES = ("init.sh", "netconfig.awk", "udhcpc.script", "tiny.py")
# The kernel command line the tests boot it with: serial console, quiet (the console
# is slow under TCG), reboot at once on a panic instead of hanging.
CMDLINE = "console=ttyS0 quiet panic=-1"


@dataclass(frozen=True)
class TinyGuest:
    kernel: Path
    initrd: Path
    cmdline: str = CMDLINE

    @property
    def busybox(self) -> Path:
        """The guest's busybox, also kept beside the image."""
        return self.kernel.parent / "busybox"


def _run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def kernel_package() -> str:
    """The versioned kernel package linux-image-amd64 stands for today."""
    out = _run("apt-cache", "depends", KERNEL_META)
    found = re.search(r"Depends: (linux-image-[0-9][^\s]*)", out)
    if found is None:
        raise RuntimeError(f"{KERNEL_META} names no kernel package (apt-get update?)")
    return found.group(1)


def candidate_versions(packages: list[str]) -> dict[str, str]:
    out = _run("apt-cache", "policy", *packages)
    versions = dict(re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (\S+)", out, re.MULTILINE))
    missing = [p for p in packages if versions.get(p) in (None, "(none)")]
    if missing:
        raise RuntimeError(f"apt knows no {', '.join(missing)} (apt-get update?)")
    return versions


def cache_key(versions: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name, version in sorted(versions.items()):
        digest.update(f"{name}={version}\n".encode())
    for name in GUEST_FILES:
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def ensure(cache: Path = CACHE) -> TinyGuest:
    """The cached guest, built first when missing (one builder at a time)."""
    try:
        kernel = kernel_package()
    except RuntimeError:  # a fresh machine whose package lists were never fetched
        _run("apt-get", "update", "-qq")
        kernel = kernel_package()
    packages = [kernel, *PACKAGES]
    folder = cache / cache_key(candidate_versions(packages))
    guest = TinyGuest(folder / "vmlinuz", folder / "initrd.img")
    if guest.kernel.exists() and guest.initrd.exists() and guest.busybox.exists():
        return guest
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.exists():
            with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as work:
                staged = Path(work) / "out"
                staged.mkdir()
                _build(Path(work), packages, staged)
                staged.rename(folder)
    return guest


# --- the build ------------------------------------------------------------------------


def _build(work: Path, packages: list[str], out: Path) -> None:
    debs = work / "debs"
    debs.mkdir()
    # apt drops to its _apt user to download unless the folder is its to write.
    _run("apt-get", "download", "-q", *packages, cwd=debs)
    root = work / "root"
    for deb in sorted(debs.glob("*.deb")):
        _run("dpkg-deb", "-x", str(deb), str(root))
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel in {packages[0]}, found {kernels}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    shutil.copyfile(kernels[0], out / "vmlinuz")
    archive = Cpio()
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev",
                      "run", "tmp", "seed", "lib/modules", "lib64"):
        archive.directory(directory)
    archive.device("dev/console", 5, 1)
    archive.file("init", (HERE / "init.sh").read_bytes(), 0o755)
    archive.file("etc/netconfig.awk", (HERE / "netconfig.awk").read_bytes(), 0o644)
    archive.file("etc/udhcpc.script", (HERE / "udhcpc.script").read_bytes(), 0o755)
    archive.file("bin/busybox", (root / "bin/busybox").read_bytes(), 0o755)
    # Also beside the image: the tests run the guest's scripts with the guest's busybox.
    shutil.copyfile(root / "bin/busybox", out / "busybox")
    (out / "busybox").chmod(0o755)
    archive.file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n", 0o644)
    archive.file("etc/group", b"root:x:0:\n", 0o644)
    order = _module_order(root / "lib/modules" / release / "kernel", MODULES)
    for name, path in order:
        archive.file(f"lib/modules/{name}.ko", _module_bytes(path), 0o644)
    archive.file("etc/modules", "".join(f"{name}.ko\n" for name, _ in order).encode(), 0o644)
    agent = root / "usr/sbin/qemu-ga"
    archive.file("usr/sbin/qemu-ga", agent.read_bytes(), 0o755)
    for library in _shared_libraries(agent, root):
        target = str(library[1]).lstrip("/")
        archive.parents(target)
        archive.file(target, library[0].read_bytes(), 0o755)
    (out / "initrd.img").write_bytes(archive.finish())
    (out / "manifest.txt").write_text(
        "".join(f"{p}\n" for p in packages) + f"kernel {release}\n"
        + "".join(f"module {name}\n" for name, _ in order))


def _module_order(tree: Path, wanted: tuple[str, ...]) -> list[tuple[str, Path]]:
    """The wanted modules and their dependencies (read from each .ko's modinfo
    `depends=`), dependencies first."""
    index = {}
    for path in tree.rglob("*.ko*"):
        index[path.name.split(".ko")[0].replace("-", "_")] = path
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            raise RuntimeError(f"kernel module {name} is not in the kernel package")
        data = _module_bytes(index[name])
        found = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
        for dependency in (found.group(1).decode().split(",") if found else []):
            if dependency:
                visit(dependency.replace("-", "_"))
        order.append((name, index[name]))

    for name in wanted:
        visit(name)
    return order


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    # busybox insmod loads plain .ko files; newer kernels ship them xz-compressed.
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def _shared_libraries(binary: Path, root: Path) -> list[tuple[Path, Path]]:
    """(file to copy, path in the guest) for each library ldd resolves, the package
    tree's own copies first, and the dynamic loader."""
    libdirs = [root / d for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")]
    out = _run("ldd", str(binary), env={"LD_LIBRARY_PATH": ":".join(map(str, libdirs))})
    found = []
    for line in out.splitlines():
        match = re.search(r"(\S+) => (\S+) \(", line) or re.search(r"^\s*(/\S+) \(", line)
        if match is None:
            continue  # linux-vdso: in the kernel
        source = Path(match.group(match.lastindex or 1))
        guest = source
        if root in source.parents:
            guest = Path("/") / source.relative_to(root)
        if guest.parent.name == "x86_64-linux-gnu" and guest.parts[1] == "usr":
            guest = Path("/lib/x86_64-linux-gnu") / guest.name
        found.append((source.resolve(), guest))
    if not any(str(g).startswith("/lib64/ld-linux") for _, g in found):
        raise RuntimeError(f"ldd found no dynamic loader for {binary}:\n{out}")
    return found


class Cpio:
    """A cpio archive in the `newc` format the kernel unpacks as its initramfs.
    https://docs.kernel.org/driver-api/early-userspace/buffer-format.html"""

    def __init__(self) -> None:
        self.data = io.BytesIO()
        self.inode = 1
        self.made: set[str] = set()

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.inode, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(body),
                  0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.inode += 1
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self.data.write(header + name.encode() + b"\0")
        self.data.write(b"\0" * (-self.data.tell() % 4))
        self.data.write(body)
        self.data.write(b"\0" * (-self.data.tell() % 4))

    def directory(self, name: str) -> None:
        self.parents(name + "/x")

    def parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            name = "/".join(parts[:i])
            if name not in self.made:
                self.made.add(name)
                self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, mode: int) -> None:
        self.parents(name)
        self._entry(name, stat.S_IFREG | mode, body)

    def device(self, name: str, major: int, minor: int) -> None:
        self.parents(name)
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.data.getvalue()


if __name__ == "__main__":
    built = ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else CACHE)
    print(built.kernel)
    print(built.initrd)
