# topoc: the two commands of the README, and what they need.
#
#   make demo   compile every example into output/ (and deploy one on test:///default)
#   make test   run the whole test suite
#
# Both set everything up on first use, on a fresh Debian machine as root: the system
# packages below through apt, then a virtualenv at .venv with topoc installed editable.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# virt-xml-validate and virsh (libvirt-clients), libvirt-python's build needs
# (libvirt-dev, pkg-config), a real libvirtd with dnsmasq for the deploy tests,
# nft, shellcheck, dot (graphviz), ip (iproute2), xmllint (libxml2-utils);
# qemu-system-x86: qemu:///system defines no domain without an emulator to probe;
# qemu-utils: libvirt's storage driver runs qemu-img to make the VMs' qcow2 overlays;
# netplan.io: its parser (`netplan generate`) checks every generated network-config.
SYSTEM_PACKAGES := libvirt-clients libvirt-dev pkg-config libvirt-daemon-system \
	dnsmasq-base nftables shellcheck graphviz iproute2 libxml2-utils procps \
	iputils-ping fping netcat-openbsd gcc python3-dev qemu-system-x86 qemu-utils netplan.io

SYSTEM_STAMP := $(VENV)/.system-packages
PYTHON_STAMP := $(VENV)/.installed

# Mermaid's own parser (npm), so the tests check every Mermaid diagram with it.
MERMAID_STAMP := tests/mermaid/node_modules/.installed

.PHONY: setup demo test bench clean

setup: $(PYTHON_STAMP)

$(SYSTEM_STAMP):
	@bash scripts/install-system-packages.sh $(SYSTEM_PACKAGES)
	@mkdir -p $(VENV) && touch $@

$(PYTHON_STAMP): $(SYSTEM_STAMP) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[deploy,test]'
	@touch $@

demo: setup
	@bash scripts/demo.sh

$(MERMAID_STAMP): tests/mermaid/package-lock.json
	@command -v npm >/dev/null || bash scripts/install-system-packages.sh nodejs npm
	npm ci --prefix tests/mermaid --no-audit --no-fund --loglevel=error
	@touch $@

test: setup $(MERMAID_STAMP)
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf output build dist *.egg-info
