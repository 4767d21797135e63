"""Time `topoc graph` on large labs: drawn in full, and collapsed as topoc does it.

    .venv/bin/python bench/diagram_bench.py [N ...]     (default: 100 1000)

For each N it writes a lab of N VMs (one host, a LAN and four networks, one per model;
the same shape as tests/test_diagram_large.py), then times scene + DOT + `dot -Tsvg`
with every VM drawn, and with VMs collapsed (what `topoc graph` does above
diagram_scene.COLLAPSE_ABOVE_VMS VMs). It reports; it asserts nothing.

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


def lab_source(n_vms: int, networks: int = 4) -> str:
    """A lab of n_vms VMs spread round-robin over `networks` networks on one host."""
    lines = ["lab biglab", "network lan {", "    mode external", "    subnet 192.168.0.0/16", "}",
             "host kvm1 {", "    nic eth0 on lan address 192.168.0.11 gateway 192.168.0.1", "}"]
    for i in range(networks):
        lines += [f"network net{i} on kvm1 {{", f"    mode {MODES[i % len(MODES)]}",
                  f"    bridge br{i}"]
        # the second isolated network has an address: host-only
        lines += [f"    address 10.{i}.0.1/16"] if MODES[i % len(MODES)] != "isolated" or i == 3 \
            else [f"    subnet 10.{i}.0.0/16"]
        lines.append("}")
    for j in range(n_vms):
        i = j % networks
        k = j // networks + 2
        lines += [f"vm vm{j} on kvm1 {{", f"    nic eth0 on net{i} address 10.{i}.{k // 250}.{k % 250 + 2}",
                  "}"]
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
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"lab{n}.topo"
            path.write_text(lab_source(n), encoding="utf-8")
            result = compile_file(str(path))
            assert result.ok, [d.message for d in result.diagnostics]
            for label, limit in (("full", 10**9), ("collapsed", 0)):
                seconds, size = timed(result.lab, limit)
                print(f"{n:>6} VMs  {label:<9}  {seconds:7.2f} s  SVG {size / 1024:8.0f} KiB",
                      flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000])
