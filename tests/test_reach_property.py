"""Properties of the engine on random labs: it never crashes, the checks agree with it,
and twins (two VMs configured alike on one network) are indistinguishable."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topoc.compiler import compile_source
from topoc.model.reach import predict

MODES = ["nat", "nat via eth0", "routed", "routed via eth0", "open", "isolated", "hostonly"]


@st.composite
def labs(draw) -> str:
    """1-2 hosts on one LAN, each with 1-3 networks of random models and 1-2 VMs each
    (twins: the same settings), a router that may know some routed subnets, a PC."""
    lines = ["lab prop", "network lan {", "    mode external", "    subnet 192.168.0.0/24", "}"]
    routes = []
    n_hosts = draw(st.integers(1, 2))
    net = 0
    for h in range(n_hosts):
        lines += [f"host kvm{h} {{", f"    nic eth0 on lan address 192.168.0.{11 + h} gateway 192.168.0.1", "}"]
        for _ in range(draw(st.integers(1, 3))):
            mode = draw(st.sampled_from(MODES))
            body = ["    mode isolated", f"    address 10.{net}.0.1/24"] if mode == "hostonly" else (
                ["    mode isolated", f"    subnet 10.{net}.0.0/24"] if mode == "isolated" else
                [f"    mode {mode}", f"    address 10.{net}.0.1/24"])
            lines += [f"network n{net} on kvm{h} {{", *body, "}"]
            if mode.startswith(("routed", "open")) and draw(st.booleans()):
                routes.append(f"    route 10.{net}.0.0/24 via 192.168.0.{11 + h}")
            for v in range(draw(st.integers(1, 2))):
                lines += [f"vm v{net}x{v} on kvm{h} {{", f"    nic eth0 on n{net} address 10.{net}.0.{10 + v}", "}"]
            net += 1
    lines += ["external router {", "    nic eth0 on lan address 192.168.0.1", *routes, "}",
              "external pc {", "    nic on lan address 192.168.0.20 gateway 192.168.0.1", "}"]
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labs())
def test_checks_agree_with_the_prediction_and_twins_are_alike(source: str) -> None:
    result = compile_source(source, "prop.topo")
    assert result.lab is not None, [d.message for d in result.diagnostics]
    matrix = predict(result.lab)
    assert all(r.reason and r.path and r.path[0] == r.src for r in matrix)
    # Every pair, written down as an `expect` with the predicted outcome, checks clean.
    expects = "".join(f"expect {r.src} {'->' if r.reachable else '!->'} {r.dst}\n" for r in matrix)
    again = compile_source(source + expects, "prop.topo")
    assert not [d.message for d in again.diagnostics if d.code == "expect-failed"]
    # Twins vX0 and vX1 see, and are seen by, everyone else alike.
    names = matrix.names
    for a in (n for n in names if n.endswith("x0")):
        b = a[:-1] + "1"
        if b not in names:
            continue
        for other in names:
            if other not in (a, b):
                assert matrix.get(a, other).reachable == matrix.get(b, other).reachable, (a, other)
                assert matrix.get(other, a).reachable == matrix.get(other, b).reachable, (other, a)
        assert matrix.get(a, b).reachable == matrix.get(b, a).reachable
