"""Labs over several hypervisors: `connect URI` in a host block and `--connect HOST=URI`,
libvirt URIs checked as libvirt reads them, and plan/deploy/status/destroy over every
host in one command, all or nothing, on two private test-driver hosts (two real
daemons: tests/test_multihost_libvirtd.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from topoc.compiler import compile_file, compile_source
from topoc.model.uri import UriError, parse_uri

TWO = ROOT / "tests/multihost/two_hosts.topo"


# --- URIs ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, driver, transport, user, host, port, local", [
    ("qemu:///system", "qemu", None, None, None, None, True),
    ("test:///default", "test", None, None, None, None, True),
    ("qemu+ssh://root@192.168.101.12/system?keyfile=/root/.ssh/id", "qemu", "ssh", "root",
     "192.168.101.12", None, False),
    ("qemu+ssh://kvm2:2222/system", "qemu", "ssh", None, "kvm2", 2222, False),
    ("qemu+unix:///system?socket=/run/x/libvirt-sock", "qemu", "unix", None, None, None, True),
    ("qemu+tls://kvm3/system?no_verify=1", "qemu", "tls", None, "kvm3", None, False),
    ("lxc:///system", "lxc", None, None, None, None, True),
])
def test_libvirt_uris_parse_into_their_parts(text, driver, transport, user, host, port, local):
    uri = parse_uri(text)
    assert (uri.driver, uri.transport, uri.user, uri.hostname, uri.port, uri.local) == \
        (driver, transport, user, host, port, local)
    assert uri.unknown_params == ()


def test_a_uri_keeps_its_extra_parameters():
    uri = parse_uri("qemu+ssh://root@h/system?keyfile=/k&no_tty=1&socket=/s")
    assert (uri.keyfile, uri.socket, uri.param("no_tty"), uri.ssh) == ("/k", "/s", "1", True)


@pytest.mark.parametrize("text, says", [
    ("qemu", "no `://`"),
    ("qemu+foo://h/system", "not a libvirt transport"),
    ("qemu+ssh:///system", "names no host"),
    ("Qemu:///system", "not a libvirt driver name"),
    ("qemu+ssh://h:notaport/system", "port"),
    ("qemu://root@/system", "no host"),
    ("qemu:///system#x", "`#`"),
    ("", "empty"),
])
def test_malformed_uris_say_what_is_wrong(text, says):
    with pytest.raises(UriError) as caught:
        parse_uri(text)
    assert says in caught.value.message
    assert caught.value.hint


CONNECT_LAB = """lab c
network lan {{
    mode external
    subnet 192.168.101.0/24
}}
host kvm1 {{
    connect {uri}
    nic eth0 on lan address 192.168.101.11
}}
"""


def test_connect_in_a_host_block_lowers_to_the_host():
    uri = "qemu+ssh://root@192.168.101.12/system?keyfile=/root/.ssh/id_ed25519&no_tty=1"
    result = compile_source(CONNECT_LAB.format(uri=uri), "c.topo")
    assert result.ok and not result.diagnostics, result.diagnostics
    assert result.lab.hosts[0].connect == uri
    quoted = compile_source(CONNECT_LAB.format(uri='"qemu:///system"'), "c.topo")
    assert quoted.lab.hosts[0].connect == "qemu:///system"


def test_a_bad_connect_uri_is_a_diagnostic_at_the_uri():
    result = compile_source(CONNECT_LAB.format(uri="qemu+foo://h/system"), "c.topo")
    [d] = result.diagnostics
    assert (d.code, d.span.line, d.span.column) == ("invalid-value", 7, 13)
    assert "transport" in d.message and "ssh" in d.hint


def test_an_unknown_uri_parameter_is_a_warning():
    result = compile_source(CONNECT_LAB.format(uri="qemu+ssh://h/system?keyfil=/k"), "c.topo")
    assert result.ok
    [d] = result.diagnostics
    assert (d.code, d.severity.value) == ("unknown-uri-parameter", "warning")
    assert "keyfil" in d.message and "keyfile" in d.hint


def test_connect_twice_and_connect_outside_a_host_are_errors():
    twice = CONNECT_LAB.format(uri="qemu:///system\n    connect qemu:///session")
    assert [d.code for d in compile_source(twice, "c.topo").diagnostics] == ["duplicate-statement"]
    outside = "lab c\nnetwork n {\n    mode isolated\n    connect qemu:///system\n}\n"
    # (Lowering goes on past the syntax error: that `n` names no host is reported too.)
    [d] = [d for d in compile_source(outside, "c.topo").diagnostics if d.code == "syntax-error"]
    assert "host" in (d.hint or "") + d.message


def test_fmt_keeps_connect_lines():
    from topoc.front.fmt import format_source

    text = TWO.read_text()
    formatted, diagnostics = format_source(text, str(TWO))
    assert formatted == text, diagnostics


# --- which connection each host is -----------------------------------------------------


def _lab():
    result = compile_file(str(TWO))
    assert result.ok
    return result.lab


def test_connections_come_from_the_file_and_the_command_line_overrides_them():
    from topoc.deploy.multi import resolve_connections

    lab = _lab()
    assert resolve_connections(lab, ()) == {
        "kvm1": "qemu:///system",
        "kvm2": "qemu+ssh://root@192.168.101.12/system?keyfile=/root/.ssh/id_ed25519"}
    assert resolve_connections(lab, ("kvm2=test:///default",)) == {
        "kvm1": "qemu:///system", "kvm2": "test:///default"}
    assert resolve_connections(lab, ("kvm2=qemu+ssh://h/system?keyfile=/a=b",))["kvm2"] == \
        "qemu+ssh://h/system?keyfile=/a=b"
    # --host picks one; a lone URI is then that host's connection.
    assert resolve_connections(lab, ("test:///default",), host="kvm2") == {"kvm2": "test:///default"}


@pytest.mark.parametrize("options, host, says", [
    (("test:///default",), None, "--connect HOST=URI"),
    (("kvm9=test:///default",), None, "no host 'kvm9'"),
    (("kvm1=test:///default", "kvm1=qemu:///system"), None, "twice"),
    (("kvm1=qemu+bad://x/system",), None, "not a libvirt transport"),
    (("kvm1=test:///default", "kvm2=test:///default"), None, "both connect to test:///default"),
    (("kvm1=qemu+ssh://h/system?keyfil=x",), None, "keyfil"),
])
def test_connection_mistakes_are_refused_with_a_message(options, host, says):
    from topoc.deploy.multi import ConnectionChoiceError, resolve_connections

    with pytest.raises(ConnectionChoiceError) as caught:
        resolve_connections(_lab(), options, host)
    assert says in str(caught.value)


def test_a_host_without_a_connection_is_named():
    from topoc.deploy.multi import ConnectionChoiceError, resolve_connections

    text = TWO.read_text().replace("    connect qemu:///system\n", "")
    lab = compile_source(text, "t.topo").lab
    with pytest.raises(ConnectionChoiceError) as caught:
        resolve_connections(lab, ())
    assert "no connection for host kvm1" in str(caught.value) and "--connect kvm1=URI" in str(caught.value)


# --- plan / deploy / status / destroy over two test-driver hosts -----------------------

libvirt = pytest.importorskip("libvirt")
from deploy_helpers import Calls, Counting, private_test_host, snapshot


@pytest.fixture
def two_hosts(tmp_path: Path):
    from topoc.deploy import multi

    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    targets = multi.connect_all({"kvm1": private_test_host(one), "kvm2": private_test_host(two)})
    yield targets
    for t in targets:
        t.target.conn.close()


def _names(conn) -> set[str]:
    return {n.name() for n in conn.listAllNetworks(0)} | {d.name() for d in conn.listAllDomains(0)}


def test_one_deploy_puts_each_hosts_objects_on_its_own_connection(two_hosts):
    from topoc.deploy import multi

    lab = _lab()
    before = [snapshot(t.target.conn) for t in two_hosts]
    plans = multi.apply_all(lab, two_hosts)
    assert [p.host for p in plans] == ["kvm1", "kvm2"]
    kvm1, kvm2 = (t.target.conn for t in two_hosts)
    assert _names(kvm1) - set(before[0]["networks"]) - set(before[0]["domains"]) == \
        {"twokvm-nat1", "twokvm-vm1"}
    assert _names(kvm2) - set(before[1]["networks"]) - set(before[1]["domains"]) == \
        {"twokvm-nat2", "twokvm-side", "twokvm-vm2"}
    # Again: nothing to change, and the plan is empty on both.
    assert all(not p.changes for p in multi.apply_all(lab, two_hosts))
    assert all(not p.changes for p in multi.plan_all(lab, two_hosts))
    rows = {t.host: {r.name: r.active for r in status} for t, status in multi.status_all(lab, two_hosts)}
    assert rows == {"kvm1": {"twokvm-nat1": True, "twokvm-vm1": False},
                    "kvm2": {"twokvm-nat2": True, "twokvm-side": True, "twokvm-vm2": False}}
    done = multi.destroy_all(lab, two_hosts)
    assert [len(removed) for _, removed, _ in done] == [2, 3]
    assert [snapshot(t.target.conn) for t in two_hosts] == before


def test_a_clash_on_the_second_host_refuses_the_whole_deploy(two_hosts):
    from topoc.deploy import multi
    from topoc.deploy.engine import Refused

    kvm2 = two_hosts[1].target.conn
    kvm2.networkDefineXML("<network><name>theirs</name><bridge name='th0'/>"
                          "<ip address='10.9.9.1' prefix='24'/></network>").create()
    before = [snapshot(t.target.conn) for t in two_hosts]
    with pytest.raises(Refused) as refused:
        multi.apply_all(_lab(), two_hosts)
    assert [d.code for d in refused.value.diagnostics] == ["host-subnet-clash"]
    assert "twokvm-side" in refused.value.diagnostics[0].message
    assert [snapshot(t.target.conn) for t in two_hosts] == before


@pytest.mark.parametrize("fail_at", [1, 4, 7])
def test_a_failure_on_the_second_host_puts_the_first_back(two_hosts, fail_at):
    """kvm1's deploy takes 4 mutating calls (define, autostart, start its network, define
    its VM); a failure at kvm2's 1st, 4th or 7th call rolls kvm2 back and then kvm1."""
    from topoc.deploy import multi
    from topoc.deploy.engine import DeployError

    before = [snapshot(t.target.conn) for t in two_hosts]
    calls = Calls(fail_at)
    two_hosts[1].target.conn = Counting(two_hosts[1].target.conn, calls)
    with pytest.raises(DeployError) as failed:
        multi.apply_all(_lab(), two_hosts)
    assert str(failed.value).startswith("host kvm2:")
    assert "kvm1, deployed in this run, were put back" in str(failed.value)
    two_hosts[1].target.conn = two_hosts[1].target.conn._real
    assert [snapshot(t.target.conn) for t in two_hosts] == before
    assert all(t.target.records.load("twokvm").empty for t in two_hosts)


def topoc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topoc", *args], capture_output=True, text=True, check=False,
                          timeout=60)


def test_the_cli_plans_and_deploys_every_host_in_one_command(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    uris = [f"kvm1={private_test_host(one)}", f"kvm2={private_test_host(two)}"]
    plan = topoc("plan", str(TWO), "--connect", uris[0], "--connect", uris[1], "--format", "json")
    assert plan.returncode == 0, plan.stderr
    hosts = json.loads(plan.stdout)["hosts"]
    assert [(h["host"], sorted(c["name"] for c in h["changes"])) for h in hosts] == [
        ("kvm1", ["twokvm-nat1", "twokvm-vm1"]),
        ("kvm2", ["twokvm-nat2", "twokvm-side", "twokvm-vm2"])]
    text = topoc("plan", str(TWO), "--connect", uris[0], "--connect", uris[1])
    assert "(host kvm1)" in text.stdout and "(host kvm2)" in text.stdout
    deploy = topoc("deploy", str(TWO), "--connect", uris[0], "--connect", uris[1], "--status")
    assert deploy.returncode == 0, deploy.stderr
    assert deploy.stdout.count("deployed lab twokvm on test://") == 2
    assert "(host kvm2):" in deploy.stdout
    lone = topoc("plan", str(TWO), "--connect", "test:///default")
    assert lone.returncode == 2 and "--connect HOST=URI" in lone.stderr


# --- topoc build: a folder per host ----------------------------------------------------


def _multi_host_labs() -> list[Path]:
    """Every lab of the repository with several hosts that compiles clean."""
    found = []
    for path in sorted([*ROOT.glob("examples/*.topo"), *ROOT.glob("tests/**/*.topo")]):
        if "node_modules" in path.parts:
            continue
        result = compile_file(str(path))
        if result.ok and len(result.lab.hosts) > 1:
            found.append(path)
    return found


MULTI_HOST_LABS = _multi_host_labs()


def test_there_are_multi_host_labs_to_build():
    assert {p.name for p in MULTI_HOST_LABS} >= {"two_hosts.topo", "multi_host.topo", "input.topo"}


def _readme_virsh_commands(readme: str, section: str) -> tuple[set[str], list[str]]:
    """The connections and the virsh commands (without `virsh -c URI`) of a section."""
    import shlex

    apply, undo = readme.split("\nApply", 1)[1].split("\nUndo", 1)
    uris, commands = set(), []
    for line in (apply if section == "Apply" else undo).splitlines():
        if line.startswith("    virsh "):
            argv = shlex.split(line)
            assert argv[:2] == ["virsh", "-c"], line
            uris.add(argv[2])
            commands.append(shlex.join(argv[3:]))
    return uris, commands


@pytest.mark.parametrize("path", MULTI_HOST_LABS, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_hosts_readme_defines_exactly_that_hosts_objects(path, tmp_path):
    """Every lab with several hosts builds libvirt/<host>/...; following one host's
    README.txt on a daemon of its own (the test driver) defines that host's networks and
    domains and nothing of the other hosts; its undo removes them again."""
    from conftest import require_tool

    from topoc.backends.libvirt import generate

    virsh = require_tool("virsh")
    lab = compile_file(str(path)).lab
    artifacts = generate(lab)
    hosts = {h.name for h in lab.hosts}
    assert {p.split("/")[1] for p in artifacts} == hosts
    for name, text in artifacts.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    for host in lab.hosts:
        readme = artifacts[f"libvirt/{host.name}/README.txt"]
        uris, apply = _readme_virsh_commands(readme, "Apply")
        _, undo = _readme_virsh_commands(readme, "Undo")
        assert uris <= {host.connect or "qemu:///system"}
        mine = {f"{lab.name}-{n.name}" for n in lab.networks if n.managed and host.name in n.hosts}
        mine |= {f"{lab.name}-{v.name}" for v in lab.vms if v.host == host.name}
        starts = [f"start {lab.name}-{v.name}" for v in lab.vms if v.host == host.name]
        script = "; ".join([*apply, *starts, "echo LISTED", "net-list --all --name", "list --all --name", "echo UNDONE",
                            *undo, "echo LISTED", "net-list --all --name", "list --all --name"])
        run = subprocess.run([virsh, "-c", "test:///default", script], cwd=tmp_path / "libvirt" / host.name,
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0 and "error" not in run.stderr, run.stderr
        applied, after = run.stdout.split("UNDONE", 1)
        after = after.split("LISTED", 1)[1]
        listed = {w for w in applied.split("LISTED", 1)[1].split() if w.startswith(f"{lab.name}-")}
        assert listed == mine, f"host {host.name}"
        assert not {w for w in after.split() if w.startswith(f"{lab.name}-")}


def test_a_one_host_lab_builds_as_before():
    from topoc.backends.libvirt import generate

    lab = compile_file(str(ROOT / "examples/nat.topo")).lab
    assert "libvirt/README.txt" in generate(lab)
    assert "virsh -c" not in generate(lab)["libvirt/README.txt"]


# --- networks on several hosts -----------------------------------------------------------

SPANNING = ROOT / "tests/multihost/spanning.topo"


def test_a_network_on_several_hosts_lowers_to_one_segment():
    from topoc.model import naming

    lab = compile_file(str(SPANNING)).lab
    seg, wan = lab.network("seg"), lab.network("wan")
    assert (seg.host, seg.extra_hosts, seg.hosts, seg.spanning) == ("kvm1", ("kvm2",), ("kvm1", "kvm2"), True)
    assert seg.vni == naming.derived_vni("span", "seg") and 1 <= seg.vni <= naming.VNI_MAX
    assert seg.vni != wan.vni
    assert seg.mtu == 1450, "VXLAN's 50 bytes come off the MTU"
    assert lab.networks_carried_by("kvm2") == (seg, wan) and lab.networks_carried_by("kvm1") == ()


@pytest.mark.parametrize("header, code, says", [
    ("network seg on kvm1 kvm2 {", "invalid-value", "not a list of hosts"),
    ("network seg on kvm1,, kvm2 {", "invalid-value", "not a list of hosts"),
    ("network seg on kvm1, kvm1 {", "duplicate-name", "named twice"),
    ("network seg on kvm1, kvm9 {", "undefined-name", "no host is named `kvm9`"),
])
def test_mistakes_in_a_list_of_hosts(header, code, says):
    text = SPANNING.read_text().replace("network seg on kvm1, kvm2 {", header)
    codes = [(d.code, d.message) for d in compile_source(text, "s.topo").diagnostics]
    assert any(c == code and says in m for c, m in codes), codes


def test_a_vm_runs_on_one_host_and_vni_needs_several():
    text = SPANNING.read_text().replace("vm a on kvm1 {", "vm a on kvm1, kvm2 {")
    assert any("runs on one host" in d.message for d in compile_source(text, "s.topo").diagnostics)
    text = SPANNING.read_text().replace("network seg on kvm1, kvm2 {", "network seg on kvm1 {\n    vni 7")
    assert any("`vni` applies to a network on several hosts" in d.message
               for d in compile_source(text, "s.topo").diagnostics)
    written = SPANNING.read_text().replace("    bridge segbr\n", "    bridge segbr\n    vni 4242\n")
    assert compile_source(written, "s.topo").lab.network("seg").vni == 4242


def test_a_vm_must_be_on_a_host_of_the_network():
    text = SPANNING.read_text().replace("network seg on kvm1, kvm2 {", "network seg on kvm1 {")
    found = [d.message for d in compile_source(text, "s.topo").diagnostics if d.code == "nic-placement"]
    assert any("VM b runs on kvm2, but network seg is on kvm1" in m for m in found), found


def test_host_scripts_join_the_bridges_with_vxlan():
    from topoc.backends.host import host_artifacts, host_plan

    lab = compile_file(str(SPANNING)).lab
    kvm1, kvm2 = (host_plan(lab, h) for h in lab.hosts)
    assert [(v.network, v.local, v.remotes, v.mtu) for v in kvm1.vxlans] == [
        ("seg", "192.168.101.11", ("192.168.101.12",), 1450),
        ("wan", "192.168.101.11", ("192.168.101.12",), 1450)]
    assert [v.name for v in kvm1.vxlans] == [v.name for v in kvm2.vxlans]
    # kvm2 carries both at L2: bridges without addresses, no firewall of its own.
    assert [(b.name, b.address) for b in kvm2.bridges] == [("segbr", None), ("wanbr", None)]
    assert kvm2.chains == () and not kvm2.forwarding
    assert [(b.name, b.address) for b in kvm1.bridges] == [("segbr", None), ("wanbr", "10.60.0.1/24")]
    up = host_artifacts(lab, "kvm2")["up.sh"]
    assert f"ensure_vxlan {kvm2.vxlans[0].name} {kvm2.vxlans[0].vni} 192.168.101.12 segbr 1450 192.168.101.11" in up


def test_libvirt_has_the_network_on_each_host_and_its_gateway_on_the_first():
    import xml.etree.ElementTree as ET

    from topoc.backends.libvirt import generate

    artifacts = generate(compile_file(str(SPANNING)).lab)
    first = ET.fromstring(artifacts["libvirt/kvm1/networks/wan.xml"].split("-->", 1)[1])
    other = ET.fromstring(artifacts["libvirt/kvm2/networks/wan.xml"].split("-->", 1)[1])
    assert first.find("forward").get("mode") == "nat" and first.find("ip") is not None
    assert other.find("forward").get("mode") == "bridge" and other.find("ip") is None
    assert other.find("bridge").get("name") == "wanbr"
    assert first.findtext("name") == other.findtext("name") == "span-wan"
    assert "VXLAN" in artifacts["libvirt/kvm2/README.txt"]


def test_the_test_driver_deploys_a_spanning_lab_and_skips_the_host_steps(two_hosts):
    from topoc.deploy import multi

    lab = compile_file(str(SPANNING)).lab
    plans = multi.apply_all(lab, two_hosts)
    assert [sorted(c.name for c in p.changes) for p in plans] == [
        ["span-a", "span-seg", "span-wan"], ["span-b", "span-c", "span-seg", "span-wan"]]
    assert all(any("not run on the test driver" in n for n in p.notes) for p in plans)
    kvm2 = two_hosts[1].target.conn
    assert kvm2.networkLookupByName("span-wan").bridgeName() == "wanbr"


def test_graph_draws_the_tunnel():
    from topoc.backends.diagram import draw, scene_for

    lab = compile_file(str(SPANNING)).lab
    scene = scene_for(lab)
    tunnels = [(link.src, link.dst) for link in scene.links if link.kind == "tunnel"]
    assert tunnels == [(("host", "kvm2"), ("network", "seg")), (("host", "kvm2"), ("network", "wan"))]
    dot = draw(scene, "dot").decode()
    assert f"VXLAN {lab.network('seg').vni}" in dot
    assert f"kvm2 -.-|\"VXLAN {lab.network('wan').vni}" in draw(scene, "mermaid").decode()


def test_a_network_on_several_hosts_takes_its_bridge_name_on_each():
    text = SPANNING.read_text() + "\nnetwork other on kvm2 {\n    mode isolated\n    bridge segbr\n    subnet 10.70.0.0/24\n}\n"
    found = [d.message for d in compile_source(text, "s.topo").diagnostics if d.code == "bridge-name"]
    assert found == ["bridge `segbr` is already used on host kvm2 by the network on line 18"], found


def test_an_interruption_on_one_host_puts_every_host_back(two_hosts):
    """^C while kvm2 deploys (here: raised inside its 3rd libvirt call): kvm2 rolls
    itself back, kvm1 (done meanwhile) is put back, and the interruption goes on."""
    from topoc.deploy import multi

    class Interrupting(Calls):
        def record(self, owner: str, method: str) -> None:
            self.log.append((owner, method))
            if len(self.log) == 3:
                raise KeyboardInterrupt

    before = [snapshot(t.target.conn) for t in two_hosts]
    real = two_hosts[1].target.conn
    two_hosts[1].target.conn = Counting(real, Interrupting())
    with pytest.raises(KeyboardInterrupt):
        multi.apply_all(_lab(), two_hosts)
    two_hosts[1].target.conn = real
    assert [snapshot(t.target.conn) for t in two_hosts] == before


def test_the_underlays_mtu_gives_the_room_for_vxlan():
    jumbo = SPANNING.read_text().replace("    bridge segbr\n", "    bridge segbr\n    mtu 8950\n")
    assert [d.code for d in compile_source(jumbo, "s.topo").diagnostics] == ["vxlan-mtu"]
    roomy = jumbo.replace("    subnet 192.168.101.0/24\n", "    subnet 192.168.101.0/24\n    mtu 9000\n")
    assert [d.code for d in compile_source(roomy, "s.topo").diagnostics] == []
