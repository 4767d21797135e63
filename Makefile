# topoc: the two commands of the README, and what they need.
#
#   make demo   compile every example into output/ (and deploy one on test:///default)
#   make test   run the whole test suite
#   make e2e    boot Debian cloud-init guests and prove a lab inside them (slow)
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
# netplan.io: its parser (`netplan generate`) checks every generated network-config;
# python3-configobj, -jinja2, -jsonpatch, -jsonschema, -requests, -yaml: what cloud-init's
# own parser imports (see CLOUD_INIT_STAMP).
# openssh-server (sshd) and openssh-client: the multi-host tests reach two sandboxed
# libvirtds through qemu+ssh:// and run host-level steps over the same ssh.
# vim: tests/test_editors.py loads editors/vim/syntax/topo.vim in a headless Vim.
SYSTEM_PACKAGES := libvirt-clients libvirt-dev pkg-config libvirt-daemon-system \
	dnsmasq-base nftables shellcheck graphviz iproute2 libxml2-utils procps \
	iputils-ping fping netcat-openbsd gcc python3-dev qemu-system-x86 qemu-utils netplan.io \
	python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema python3-requests python3-yaml \
	openssh-server openssh-client vim

SYSTEM_STAMP := $(VENV)/.system-packages
PYTHON_STAMP := $(VENV)/.installed

# Mermaid's own parser (npm), so the tests check every Mermaid diagram with it.
MERMAID_STAMP := tests/mermaid/node_modules/.installed

# cloud-init's own network-config parser and renderers (`cloud-init devel net-convert`),
# what Debian's guests run where no netplan is, so the tests check every network-config
# with it too: Debian's cloud-init package unpacked into .venv/cloud-init, NOT installed
# (an installed cloud-init would configure this machine at its next boot), run by the
# system python3 (tests/test_cloudinit.py).
CLOUD_INIT_STAMP := $(VENV)/cloud-init/.unpacked

# `make e2e` only: mmdebstrap builds the Debian guest image from the machine's apt
# sources, mke2fs (e2fsprogs) packs it, qemu-img (qemu-utils) makes each guest's overlay.
E2E_PACKAGES := mmdebstrap e2fsprogs qemu-utils

.PHONY: setup demo test e2e bench clean

setup: $(PYTHON_STAMP)

$(SYSTEM_STAMP): Makefile
	@bash scripts/install-system-packages.sh $(SYSTEM_PACKAGES)
	@mkdir -p $(VENV) && touch $@

$(PYTHON_STAMP): $(SYSTEM_STAMP) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[deploy,lsp,test]'
	@touch $@

demo: setup
	@bash scripts/demo.sh

$(MERMAID_STAMP): tests/mermaid/package-lock.json
	@command -v npm >/dev/null || bash scripts/install-system-packages.sh nodejs npm
	npm ci --prefix tests/mermaid --no-audit --no-fund --loglevel=error
	@touch $@

$(CLOUD_INIT_STAMP): $(SYSTEM_STAMP)
	@rm -rf $(VENV)/cloud-init && mkdir -p $(VENV)/cloud-init
	cd $(VENV)/cloud-init && apt-get download -qq cloud-init && dpkg-deb -x cloud-init_*.deb root
	@touch $@

# ruff and mypy first: topoc/ must be clean under both (configured in pyproject.toml).
test: setup $(MERMAID_STAMP) $(CLOUD_INIT_STAMP)
	$(BIN)/ruff check topoc
	$(BIN)/mypy
	$(BIN)/python -m pytest

e2e: setup
	@bash scripts/install-system-packages.sh $(E2E_PACKAGES)
	TOPOC_E2E=1 $(BIN)/python -m pytest -s tests/test_e2e_debian.py

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf output build dist *.egg-info
