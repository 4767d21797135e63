#!/usr/bin/env bash
# `make demo`: build every bundled example into output/<lab>/, as a new user would.
# `topoc build` checks first (a topology with errors builds nothing), then writes the
# libvirt XML, host scripts and diagrams of each lab atomically, with a manifest.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
status=0
for example in examples/*.topo; do
    echo "== $example"
    .venv/bin/topoc build "$example" || status=1
done
echo
echo "Built into output/: each lab's libvirt/README.txt lists the virsh steps to apply it."
# The README's pictures: the same bytes on every run, so git sees no change.
for lab in nat mixed; do .venv/bin/topoc graph "examples/$lab.topo" -o "docs/$lab.png" || status=1; done

# Deploy one lab to libvirt's in-memory test driver (no daemon), one command at a time,
# as on a real host: topoc keeps test:///default's host between commands in its state
# folder. It starts from libvirt's own default host.
step() {
    echo
    echo "== topoc $*"
    .venv/bin/topoc "$@" || status=1
}
mkdir -p output/demo
cp examples/nat.topo output/demo/nat.topo
lab=output/demo/nat.topo
step reset-test-host
step deploy "$lab"
step status "$lab"
# An edit: a third VM on the NAT network, with a static address.
cat >> "$lab" <<'EOF'

vm vm2 on kvm1 {
    memory 512MiB
    nic eth0 on natnet address 188.64.100.4
}
EOF
echo
echo "== (edit: $lab gains vm2 on natnet, address 188.64.100.4)"
step plan "$lab"
step deploy "$lab"
step plan "$lab"
step destroy "$lab"
# And back the other way: what the test host has, as a .topo file.
step import --lab testhost
step reset-test-host
exit $status
