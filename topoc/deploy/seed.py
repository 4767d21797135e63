"""The NoCloud seed image: the cloud-init backend's three files -> an ISO 9660 image.

cloud-init's NoCloud datasource reads a filesystem labelled `cidata` holding
`user-data`, `meta-data` and (optionally) `network-config`
(https://docs.cloud-init.io/en/latest/reference/datasources/nocloud.html). The image is
made in pure Python with pycdlib (https://clalancette.github.io/pycdlib/), so deploy
needs no genisoimage/xorriso on either machine: the bytes go to the hypervisor through
libvirt's storage API. Rock Ridge and Joliet carry the real (lower-case, hyphenated)
file names; ISO 9660 level 1 itself allows only 8.3 upper-case ones.
"""

from __future__ import annotations

import io
from typing import Any

VOLUME_LABEL = "cidata"

# The ISO 9660 (8.3) name of each file; readers use the Rock Ridge / Joliet name.
_ISO_NAMES = {"meta-data": "/METADATA.;1", "user-data": "/USERDATA.;1",
              "network-config": "/NETWORKC.;1", "vendor-data": "/VENDORDA.;1"}


class SeedError(Exception):
    """pycdlib is missing (a message for people)."""


def _pycdlib() -> Any:
    try:
        import pycdlib
    except ImportError:
        raise SeedError("pycdlib is not installed; install topoc with its deploy extra: "
                        "pip install 'topoc[deploy]'") from None
    return pycdlib


def iso_image(files: dict[str, str]) -> bytes:
    """The seed as ISO 9660 bytes, labelled `cidata`, one file per entry."""
    pycdlib = _pycdlib()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    try:
        for name in sorted(files):
            data = files[name].encode("utf-8")
            iso.add_fp(io.BytesIO(data), len(data), _ISO_NAMES[name], rr_name=name,
                       joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def read_iso(data: bytes) -> tuple[str, dict[str, str]]:
    """(volume label, file name -> text) of a seed image, by its Rock Ridge names: what
    a Linux guest mounting it sees (the tests read seeds back with this)."""
    pycdlib = _pycdlib()
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        label = iso.pvd.volume_identifier.decode("ascii").rstrip()
        files = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode("utf-8")
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue().decode("utf-8")
    finally:
        iso.close()
    return label, files
