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
# Deploy one lab to libvirt's in-memory test driver (no daemon) and show its status.
# That host lives only as long as one command, so deploy and status run in one.
echo
echo "== topoc deploy examples/nat.topo --status  (test:///default)"
.venv/bin/topoc deploy examples/nat.topo --status || status=1
exit $status
