#!/usr/bin/env bash
# Install the Debian packages topoc's tools and tests need, only those missing.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "topoc setup: these Debian packages are missing: ${missing[*]}" >&2
    echo "topoc setup: run as root (or install them with sudo apt-get install ${missing[*]})" >&2
    exit 2
fi
echo "topoc setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# libvirt-daemon-system would start libvirtd on the machine; topoc's tests start their
# own daemon in a namespace, so keep the packaged services from starting here.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
