"""The host backend without a kernel: golden scripts and rulesets for every example and
case, shellcheck on every script, layout, determinism, and hostile input staying inert.
(tests/test_host_netns.py runs them for real.)"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from host_cases import artifacts, case_files, case_name, compile_case, compile_text

from topoc.backends import host as host_backend
from topoc.backends.host import host_artifacts, host_plan
from topoc.compiler import compile_source
from topoc.model.family import IPV4

CASES = case_files()
IDS = [case_name(p) for p in CASES]

ONE_HOST = """\
lab hostile
network lan {
    mode external
    subnet 192.168.7.0/24
}
host kvm1 {
    nic eth0 on lan address 192.168.7.2 gateway 192.168.7.1
}
network natnet on kvm1 {
    mode nat via eth0
    address 10.7.0.1/24
}
vm vm0 on kvm1 {
    disk DISK
    nic eth0 on natnet address 10.7.0.2
}
forward tcp 2222 to vm0:22
"""


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_golden(path: Path, golden) -> None:
    for relative, text in sorted(artifacts(compile_case(path)).items()):
        golden.check(Path("host") / case_name(path) / relative, text)


def test_every_generated_script_passes_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    scripts = []
    for path in CASES:
        for relative, text in artifacts(compile_case(path)).items():
            if relative.endswith(".sh"):
                target = tmp_path / case_name(path) / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                scripts.append(str(target))
    assert len(scripts) >= 2 * len(CASES)
    result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", *scripts],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_host_writes_host_folder_and_several_one_folder_each() -> None:
    nat = compile_case(next(p for p in CASES if case_name(p) == "nat"))
    assert sorted(artifacts(nat)) == ["host/down.sh", "host/topoc.nft", "host/up.sh"]
    two = compile_case(next(p for p in CASES if case_name(p) == "twohosts"))
    assert sorted(artifacts(two)) == [f"host/{h}/{f}" for h in ("alpha", "beta")
                                      for f in ("down.sh", "topoc.nft", "up.sh")]
    assert host_artifacts(two, "beta") == {
        name: artifacts(two)[f"host/beta/{name}"] for name in ("up.sh", "down.sh", "topoc.nft")}


def test_lab_without_host_has_no_host_artifacts() -> None:
    lab = compile_text("lab empty\nnetwork lan {\n    mode external\n    subnet 10.0.0.0/24\n}\n")
    assert host_backend.generate(lab) == {}


def test_output_is_deterministic() -> None:
    for path in CASES:
        assert artifacts(compile_case(path)) == artifacts(compile_case(path))


def test_scripts_are_strict_and_refuse_without_root() -> None:
    for path in CASES:
        for relative, text in artifacts(compile_case(path)).items():
            if relative.endswith(".sh"):
                assert "\nset -euo pipefail\n" in text
                assert 'if [ "$(id -u)" -ne 0 ]; then' in text


def test_forward_without_a_static_address_gets_no_rule() -> None:
    lab = compile_case(next(p for p in CASES if case_name(p) == "twohosts"))
    beta = host_plan(lab, lab.hosts[1])
    assert beta.skipped_forwards == ("udp 5353 to b2:53",)
    nft = host_artifacts(lab, "beta")["topoc.nft"]
    assert "dport 5353" not in nft and "No rule for `forward udp 5353 to b2:53`" in nft
    assert "tcp dport 8443 dnat ip to 10.30.0.10:443" in nft
    alpha_nft = host_artifacts(lab, "alpha")["topoc.nft"]
    assert "tcp dport 80 dnat ip to 10.20.0.10:8080" in alpha_nft


def test_ruleset_follows_libvirt_order_fwx_fwi_fwo() -> None:
    """The DNAT accept first (it must win over the NAT network's inbound reject), then
    libvirt's FWX, FWI, FWO; each network's accepts before its reject."""
    nft = artifacts(compile_case(next(p for p in CASES if case_name(p) == "mixed")))["host/topoc.nft"]
    forward = nft[nft.index("chain forward"):nft.index("chain postrouting")]
    order = [forward.index(marker) for marker in (
        "ct status dnat accept", ": FWX", ": FWI", ": FWO")]
    assert order == sorted(order)
    assert forward.index("front (nat): FWI replies back in") < forward.index(
        "front (nat): FWI reject the rest in")
    assert "flush ruleset" not in nft
    assert re.findall(r"^table inet (\S+)", nft, re.M) == ["topoc_mixlab"] * 2


HOSTILE_STRINGS = [
    "/var/lib/images/a b.qcow2",
    "/tmp/$(touch PWNED).qcow2",
    "/tmp/`id`;rm -rf x.qcow2",
    "/tmp/it's \\\"quoted\\\".qcow2",
    "/tmp/semi;colon&amp|pipe.qcow2",
]


@pytest.mark.parametrize("disk", HOSTILE_STRINGS)
def test_hostile_disk_paths_never_reach_the_host_files(disk: str) -> None:
    """Disk paths are the language's only free strings; the host files do not use them,
    so the scripts are byte-identical to those of a plain path."""
    hostile = compile_text(ONE_HOST.replace("DISK", f'"{disk}"'))
    plain = compile_text(ONE_HOST.replace("DISK", "/var/lib/plain.qcow2"))
    assert hostile.vms[0].disk == disk.replace("\\", "")
    assert artifacts(hostile) == artifacts(plain)


def test_hostile_source_file_names_stay_inside_comments() -> None:
    """The .topo file's name (as given on the command line) appears in header comments:
    line breaks and quotes in it are neutralised so it cannot end the comment."""
    name = "evil\nrm -rf ~; echo \"$(id)\".topo"
    lab = compile_text(ONE_HOST.replace("DISK", "/x.qcow2"), file=f"/tmp/{name}")
    for text in artifacts(lab).values():
        assert "\nrm -rf" not in text
        assert "evil?rm -rf ~; echo ?$(id)?.topo" in text


@pytest.mark.parametrize("source, why", [
    ("lab a$(id)\n", "lab name"),
    ("lab x\nhost h {\n    nic eth0;id on lan address 1.2.3.4\n}\n", "nic name"),
    ("lab x\nnetwork n {\n    mode isolated\n    bridge br'0\n}\n", "bridge name"),
    ('lab x\nnetwork n {\n    mode isolated\n    bridge "br 0"\n}\n', "quoted bridge name"),
    ("lab x\nnetwork n {\n    mode nat via e`id`\n    address 10.0.0.1/24\n}\n", "via device"),
    ("lab x\nvm v$x {\n    memory 1GiB\n}\n", "vm name"),
])
def test_hostile_names_are_diagnostics_and_never_reach_a_backend(source: str, why: str) -> None:
    result = compile_source(source, "hostile.topo")
    assert not result.ok, why
    assert result.diagnostics, why
    # Lowering keeps going, but the hostile value is left out of the lab it builds.
    held = repr(result.lab)
    assert not any(bad in held for bad in ("$", ";id", "br'0", "br 0", "`")), held


def test_every_shell_value_is_one_quoted_word() -> None:
    """Every step line of up.sh/down.sh splits, as the shell would, into the helper and
    exactly the values the plan holds: nothing a value contains can add a word."""
    lab = compile_case(next(p for p in CASES if case_name(p) == "twohosts"))
    plan = host_plan(lab, lab.hosts[0])
    up = host_artifacts(lab, "alpha")["up.sh"]
    steps = [shlex.split(line, comments=True) for line in up.splitlines()
             if line.startswith(("ensure_", "move_", "enslave_"))]
    bridge = plan.bridges[0]
    assert ["ensure_bridge", bridge.name, "1", "200", "9000", bridge.address] in steps
    assert ["ensure_tap", plan.taps[0].name, bridge.name, "9000"] in steps
    assert ["ensure_route", "10.21.0.0/16", "10.20.0.10"] in steps


def test_unknown_host_is_a_clear_error() -> None:
    lab = compile_case(next(p for p in CASES if case_name(p) == "nat"))
    with pytest.raises(KeyError, match="lab natlab has no host 'nope'"):
        host_artifacts(lab, "nope")


def test_ipv6_routes_render_with_ip_6(tmp_path: Path) -> None:
    """A host's IPv6 `route` goes in and out with `ip -6 route` (ensure_route6 and
    remove_route6, only in a script that has one; shellcheck runs on every case)."""
    dual = compile_case(next(p for p in CASES if case_name(p) == "dualstack"))
    scripts = host_artifacts(dual, "kvm1")
    assert "ensure_route 10.77.0.0/16 10.10.102.5\nensure_route6 fd00:77::/48 fd00:102::5\n" in scripts["up.sh"]
    assert "remove_route6 fd00:77::/48 fd00:102::5\nremove_route 10.77.0.0/16 10.10.102.5\n" in scripts["down.sh"]
    assert 'ip -6 route add "$destination" via "$gateway"' in scripts["up.sh"]
    nat6 = host_artifacts(compile_case(next(p for p in CASES if case_name(p) == "dualstack-nat6")), "kvm1")
    assert "ensure_route6" not in nat6["up.sh"] and "remove_route6" not in nat6["down.sh"]


def test_an_ipv4_only_lab_has_no_ipv6_in_its_scripts() -> None:
    """The IPv6 helpers and steps appear only where the lab has IPv6."""
    for path in CASES:
        lab = compile_case(path)
        if lab.families != (IPV4,):
            continue
        for relative, text in artifacts(lab).items():
            for word in ("ip -6", "ipv6", "ip6 ", "nfproto", "bridge6"):
                assert word not in text, (relative, word)
