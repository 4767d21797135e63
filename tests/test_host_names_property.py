"""Every name the grammar accepts makes host scripts that pass shellcheck.

Names are drawn from the grammar's own rules (topoc.front.lower's NAME_RE for labs,
hosts, networks and VMs, IFNAME_RE for bridges and nic names), weighted towards shell
reserved words (`lab done`, `host do`: shellcheck's SC1010 before they were quoted).
Each example is one lab with every kind of name in it, through shellcheck at
--severity=style; a modest number of examples keeps it fast.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import require_tool
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from topoc.backends.host import SHELL_RESERVED, generate
from topoc.compiler import compile_source
from topoc.front.values import IFNAME_RE, NAME_RE

RESERVED = sorted(w for w in SHELL_RESERVED if NAME_RE.fullmatch(w))
KEYWORDS = ["lab", "network", "host", "vm", "on", "to", "via", "nic", "mode", "bridge"]
names = st.one_of(st.sampled_from(RESERVED), st.sampled_from(KEYWORDS),
                  st.from_regex(NAME_RE, fullmatch=True).filter(lambda n: len(n) <= 12))
ifnames = st.one_of(st.sampled_from(RESERVED),
                    st.from_regex(IFNAME_RE, fullmatch=True).filter(lambda n: len(n) <= 15))


def lab_text(lab: str, host: str, nat: str, bridged: str, vm: str, bridge: str, nic: str) -> str:
    return f"""lab {lab}
network lan {{
    mode external
    subnet 192.168.1.0/24
}}
host {host} {{
    nic {nic} on lan address 192.168.1.2 gateway 192.168.1.1
}}
network {nat} on {host} {{
    mode nat via {nic}
    bridge {bridge}
    address 10.1.0.1/24
}}
network {bridged} on {host} {{
    mode bridged to {nic}
}}
vm {vm} on {host} {{
    nic {nic} on {nat} address 10.1.0.5
    nic on {bridged} address 192.168.1.9/24
}}
"""


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lab=names, host=names, nat=names, bridged=names, vm=names, bridge=ifnames, nic=ifnames)
def test_scripts_pass_shellcheck_for_every_name(tmp_path_factory, lab, host, nat, bridged, vm,
                                                bridge, nic) -> None:
    shellcheck = require_tool("shellcheck")
    assume(len({host, vm}) == 2 and len({nat, bridged, "lan"}) == 3 and bridge != nic)
    result = compile_source(lab_text(lab, host, nat, bridged, vm, bridge, nic), "names.topo")
    # Names the checks refuse (a bridge called like a host nic, a reserved prefix, a name
    # too long for what derives from it) never reach a script.
    assume(result.ok)
    assert result.lab is not None
    folder: Path = tmp_path_factory.mktemp("scripts")
    paths = []
    for relative, text in generate(result.lab).items():
        if relative.endswith(".sh"):
            path = folder / relative.replace("/", "_")
            path.write_text(text)
            paths.append(str(path))
    assert len(paths) == 2
    checked = subprocess.run([shellcheck, "--shell=bash", "--severity=style", *paths],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_reserved_words_of_the_issue_are_quoted() -> None:
    result = compile_source(lab_text("done", "do", "fi", "then", "esac", "while", "eth0"), "kw.topo")
    assert result.ok, [d.message for d in result.diagnostics]
    up = generate(result.lab)["host/up.sh"]  # type: ignore[arg-type]
    assert "LAB='done'\n" in up and "HOST='do'\n" in up
    assert "ensure_bridge 'while' " in up
