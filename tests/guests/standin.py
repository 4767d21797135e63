"""STAND-IN, for the tests only, until the language's `kernel`/`initrd`/`image`
statements and the cloud-init backend land: the test attaches the boot and the seed to
topoc's own domain XML itself.

- `network_config(lab, vm)`: a NoCloud network-config v2 for one VM, matched by MAC
  with set-name, its static addresses, its routes (topology.effective_routes: the
  default is the `gateway` or the nat/routed/open network's address), dhcp4 on a nic
  without an address. https://cloudinit.readthedocs.io/en/latest/reference/network-config-format-v2.html
- `seed_iso(...)`: the NoCloud seed, an ISO 9660 volume labelled `cidata` with
  meta-data, user-data and network-config, written with pycdlib.
  https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html
- `bootable(domain_xml, ...)`: topoc's domain XML plus what the guest needs to boot here:
  type='qemu' (TCG: the sandboxed daemon has no KVM), direct kernel boot, the seed as a
  CD-ROM, the guest agent's channel, a serial log, TCG's code cache capped at 128 MiB
  (QEMU's default of 1 GiB makes each guest that large). Elements topoc's XML already
  has (channel, cdrom) are left as they are, so this keeps working as topoc grows them.
  https://libvirt.org/formatdomain.html (#direct-kernel-boot, #hypervisor-features,
  #channel, #hard-drives-floppy-disks-cdroms)
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

from topoc.model.family import IPV6
from topoc.model.ir import Lab, Vm
from topoc.model.topology import effective_routes

AGENT_CHANNEL = "org.qemu.guest_agent.0"
TB_CACHE_MIB = 128


def network_config(lab: Lab, vm: Vm) -> str:
    lines = ["version: 2", "ethernets:"]
    routes = effective_routes(lab, vm.name)
    routes6 = effective_routes(lab, vm.name, IPV6)
    for nic in vm.nics:
        lines += [f"  {nic.name}:", "    match:", f'      macaddress: "{nic.mac}"',
                  f"    set-name: {nic.name}"]
        if nic.address is None:
            lines.append("    dhcp4: true")
            continue
        lines += ["    addresses:", f"      - {nic.address}"]
        if nic.address6 is not None:
            lines.append(f'      - "{nic.address6}"')
        mine = [r for r in routes if r.via in nic.address.network]
        if nic.address6 is not None:
            # The IPv6 default route is the network's router advertisement (the guest's
            # kernel accepts it); routes the file names are written like IPv4's.
            mine += [r for r in routes6 if r.via in nic.address6.network and not r.is_default]
        if mine:
            lines.append("    routes:")
            for route in mine:
                # cloud-init 22.4 (Debian 12) refuses `to: default` ("Address default is not a
                # valid ip network"); 0.0.0.0/0 means the same to every version.
                lines += [f"      - to: {route.destination}",
                          f"        via: {route.via}"]
    return "\n".join(lines) + "\n"


def seed_iso(path: Path, hostname: str, network: str) -> Path:
    import pycdlib

    files = {"meta-data": f"instance-id: {hostname}\nlocal-hostname: {hostname}\n",
             "user-data": "#cloud-config\n", "network-config": network}
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, text in files.items():
        body = text.encode()
        iso.add_fp(io.BytesIO(body), len(body), "/" + name.upper().replace("-", "_") + ".;1",
                   rr_name=name, joliet_path="/" + name)
    iso.write(str(path))
    iso.close()
    return path


def bootable(domain_xml: str, kernel: Path, initrd: Path, cmdline: str, seed: Path,
             memory_mib: int | None = None, serial_log: Path | None = None,
             disk: Path | None = None) -> str:
    """`disk`: a qcow2 overlay to boot as vda (the Debian guest), unless the domain
    already has a disk."""
    root = ET.fromstring(domain_xml)
    root.set("type", "qemu")
    if memory_mib is not None:
        memory = root.find("memory")
        assert memory is not None
        memory.set("unit", "MiB")
        memory.text = str(memory_mib)
    os_ = root.find("os")
    assert os_ is not None
    for boot in os_.findall("boot"):
        os_.remove(boot)
    for tag, text in (("kernel", str(kernel)), ("initrd", str(initrd)), ("cmdline", cmdline)):
        if os_.find(tag) is None:
            ET.SubElement(os_, tag).text = text
    features = root.find("features")
    if features is None:
        features = ET.SubElement(root, "features")
    if features.find("tcg") is None:
        cache = ET.SubElement(ET.SubElement(features, "tcg"), "tb-cache", unit="MiB")
        cache.text = str(TB_CACHE_MIB)
    devices = root.find("devices")
    assert devices is not None
    if disk is not None and not any(d.get("device") == "disk" for d in devices.findall("disk")):
        element = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(element, "driver", name="qemu", type="qcow2")
        ET.SubElement(element, "source", file=str(disk))
        ET.SubElement(element, "target", dev="vda", bus="virtio")
    if not any(d.get("device") == "cdrom" for d in devices.findall("disk")):
        disk = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(disk, "driver", name="qemu", type="raw")
        ET.SubElement(disk, "source", file=str(seed))
        ET.SubElement(disk, "target", dev="hdc", bus="ide")
        ET.SubElement(disk, "readonly")
    if not any(t.get("name") == AGENT_CHANNEL for t in devices.iterfind("channel/target")):
        channel = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(channel, "target", type="virtio", name=AGENT_CHANNEL)
    if serial_log is not None:
        for serial in devices.findall("serial"):
            serial.append(ET.Element("log", file=str(serial_log)))
    return ET.tostring(root, encoding="unicode")
