"""Time `topoc graph` on large labs: drawn in full, and collapsed as topoc does it.

    .venv/bin/python bench/diagram_bench.py [N ...]     (default: 100 1000)

For each N it writes two labs of N VMs on one host and a LAN: one nic per VM over four
networks (NAT, routed, isolated, host-only; tests/test_diagram_large.py uses it), and two
nics per VM over eight networks (many crossings for dot to untangle). It times scene +
DOT + `dot -Tsvg` with every VM drawn, and with VMs collapsed (what `topoc graph` does
above diagram_scene.COLLAPSE_ABOVE_VMS VMs). It reports; it asserts nothing.

Responsibility: measuring the diagram backend. It writes only to a temp dir.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from topoc.backends.diagram import render
from topoc.backends.diagram_dot import dot_source
from topoc.backends.diagram_scene import build_scene
from topoc.compiler import compile_file

MODES = ("nat via eth0", "routed via eth0", "isolated", "isolated")


def lab_source(n_vms: int, networks: int = 4, two_nics: bool = False) -> str:
    """A lab of n_vms VMs spread round-robin over `networks` networks on one host; with
    `two_nics`, each VM has a second nic three networks further on (many crossings)."""
    lines = ["lab biglab", "network lan {", "    mode external", "    subnet 192.168.0.0/16", "}",
             "host kvm1 {", "    nic eth0 on lan address 192.168.0.11 gateway 192.168.0.1", "}"]
    for i in range(networks):
        mode = MODES[i % len(MODES)]
        lines += [f"network net{i} on kvm1 {{", f"    mode {mode}", f"    bridge br{i}"]
        # of the two isolated networks in MODES, the second has an address: host-only
        host_only = mode == "isolated" and i % len(MODES) == 3
        lines.append(f"    address 10.{i}.0.1/16" if mode != "isolated" or host_only
                     else f"    subnet 10.{i}.0.0/16")
        lines.append("}")
    for j in range(n_vms):
        i, k = j % networks, j // networks + 2
        lines += [f"vm vm{j} on kvm1 {{",
                  f"    nic eth0 on net{i} address 10.{i}.{k // 250}.{k % 250 + 2}"]
        if two_nics:
            other = (i + 3) % networks
            address = f"10.{other}.{100 + k // 250}.{k % 250 + 2}"
            lines.append(f"    nic eth1 on net{other} address {address}")
        lines.append("}")
    # The LAN PC routes to the routed networks through the host (else: unreachable-segment).
    lines += ["external pc {", "    nic on lan address 192.168.0.20"]
    lines += [f"    route 10.{i}.0.0/16 via 192.168.0.11" for i in range(networks)
              if MODES[i % len(MODES)].startswith("routed")]
    lines.append("}")
    return "\n".join(lines) + "\n"


def timed(lab, collapse_above: int) -> tuple[float, int]:
    start = time.perf_counter()
    svg = render(dot_source(build_scene(lab, collapse_above=collapse_above)), "svg")
    return time.perf_counter() - start, len(svg)


def main(sizes: list[int]) -> None:
    shapes = (("1 nic, 4 networks", {}), ("2 nics, 8 networks", {"networks": 8, "two_nics": True}))
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for shape, options in shapes:
                path = Path(tmp) / f"lab{n}.topo"
                path.write_text(lab_source(n, **options), encoding="utf-8")
                result = compile_file(str(path))
                assert result.ok, [d.message for d in result.diagnostics]
                for label, limit in (("full", 10**9), ("collapsed", 0)):
                    seconds, size = timed(result.lab, limit)
                    print(f"{n:>6} VMs  {shape:<18}  {label:<9}  {seconds:7.2f} s  "
                          f"SVG {size / 1024:8.0f} KiB", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000])
