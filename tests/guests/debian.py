"""Builds the Debian test guest for `make e2e`: a Debian system with cloud-init and
qemu-guest-agent, from Debian packages only (mmdebstrap, with the machine's own apt
sources file as its mirror argument, so it never falls back to its public default).

Output, cached outside the checkout in CACHE/debian-<key>/ (rebuilt only when the key,
a hash of the recipe, the apt sources and the package versions apt would fetch, changes):
  root.raw        an ext4 file system labelled `root` (boot it with root=LABEL=root);
                  never written to: each guest boots a qcow2 overlay on top of it
  vmlinuz, initrd.img   its kernel and initramfs, for direct kernel boot

Made for fast, deterministic test boots (the pitfalls measured on the way):
- cloud-init looks only for NoCloud (then None), no other datasource probing, and
  skips what fails or is moot here (growing the root file system, SSH host keys);
- the CD-ROM's modules are in the initramfs, so the seed is there before cloud-init's
  first stage looks for it (otherwise it may appear after, and the guest boots
  unconfigured);
- systemd-networkd-wait-online waits for IPv4 on any link only: waiting for IPv6
  router advertisements that never come adds ~12 s to every boot (cloud-init 22.4
  ignores `accept-ra: false`);
- an empty /etc/machine-id, so guests booted from one image are not twins.

    python tests/guests/debian.py          # build (or find) it and print the folder
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from guests.tiny import CACHE, candidate_versions

SUITE = "bookworm"
PACKAGES = ("linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "udev", "cloud-init",
            "qemu-guest-agent", "iputils-ping", "netcat-openbsd", "iproute2")
IMAGE_SIZE = "2G"  # sparse: about 500 MiB of it is used
CMDLINE = "root=LABEL=root rw console=ttyS0 quiet"
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))

# Run by mmdebstrap in the finished tree ($1) before it is packed.
CUSTOMIZE = r"""
set -eu
R="$1"
printf 'datasource_list: [ NoCloud, None ]\nresize_rootfs: false\ngrowpart: {mode: "off"}\nssh_genkeytypes: []\n' \
    > "$R/etc/cloud/cloud.cfg.d/90-topoc-test.cfg"
printf 'ata_piix\nahci\nsr_mod\ncdrom\nisofs\nvirtio_pci\nvirtio_blk\n' >> "$R/etc/initramfs-tools/modules"
chroot "$R" update-initramfs -u -k all
mkdir -p "$R/etc/systemd/system/systemd-networkd-wait-online.service.d"
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --ipv4 --timeout=30\n' \
    > "$R/etc/systemd/system/systemd-networkd-wait-online.service.d/topoc-test.conf"
chroot "$R" systemctl enable systemd-networkd
printf 'LABEL=root / ext4 defaults 0 1\n' > "$R/etc/fstab"
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
"""


@dataclass(frozen=True)
class DebianGuest:
    image: Path
    kernel: Path
    initrd: Path
    cmdline: str = CMDLINE


def apt_sources() -> Path:
    for path in APT_SOURCES:
        if path.is_file():
            return path
    raise RuntimeError(f"no apt sources file at {' or '.join(map(str, APT_SOURCES))}")


# Bump when _build changes what it makes; the key covers the rest of the recipe.
RECIPE = 1


def cache_key() -> str:
    recipe = f"{RECIPE} {SUITE} {PACKAGES} {IMAGE_SIZE} {CMDLINE}\n{CUSTOMIZE}"
    digest = hashlib.sha256(recipe.encode())
    digest.update(apt_sources().read_bytes())
    for name, version in sorted(candidate_versions(list(PACKAGES)).items()):
        digest.update(f"{name}={version}\n".encode())
    return digest.hexdigest()[:16]


def ensure(cache: Path = CACHE) -> DebianGuest:
    folder = cache / f"debian-{cache_key()}"
    guest = DebianGuest(folder / "root.raw", folder / "vmlinuz", folder / "initrd.img")
    if all(p.exists() for p in (guest.image, guest.kernel, guest.initrd)):
        return guest
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock-debian", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.exists():
            with tempfile.TemporaryDirectory(dir=cache, prefix=".build-debian-") as work:
                staged = Path(work) / "out"
                staged.mkdir()
                _build(Path(work), staged)
                staged.rename(folder)
    return guest


def _build(work: Path, out: Path) -> None:
    tree = work / "tree"
    hook = work / "customize.sh"
    hook.write_text(CUSTOMIZE)
    subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", "--components=main",
                    f"--include={','.join(PACKAGES)}",
                    f"--customize-hook=sh {hook} \"$1\"",
                    SUITE, str(tree), str(apt_sources())], check=True)
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise RuntimeError(f"expected one kernel and one initrd in the tree: {kernels} {initrds}")
    shutil.copyfile(kernels[0], out / "vmlinuz")
    shutil.copyfile(initrds[0], out / "initrd.img")
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(tree),
                    str(out / "root.raw"), IMAGE_SIZE], check=True)
    os.chmod(out / "root.raw", 0o444)  # a base image: nothing writes to it


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else CACHE).image.parent)
