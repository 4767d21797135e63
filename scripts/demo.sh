#!/usr/bin/env bash
# `make demo`: check every bundled example, as a new user would.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for example in examples/*.topo; do
    echo "== $example"
    .venv/bin/topoc check "$example" || status=1
done
exit $status
