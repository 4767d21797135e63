#!/bin/busybox sh
# /init of topoc's tiny test guest (busybox, direct kernel boot). A test fixture, not
# product: just enough of a guest to prove a lab's reachability from inside a VM.
#
#  1. mounts proc, sys, dev; loads the modules listed in /etc/modules (in dependency
#     order, resolved when the initramfs was built): virtio nics, console, CD-ROM, iso9660
#  2. finds the NoCloud seed (an iso9660 volume labelled `cidata`) and applies its
#     `network-config` v2 with busybox `ip` (netconfig.awk reads it), DHCP with udhcpc
#     for the nics marked dhcp4; `local-hostname` from `meta-data` becomes the hostname
#  3. runs qemu-guest-agent on the virtio-serial port org.qemu.guest_agent.0, so the
#     host can guest-exec in it, and keeps it running
# Everything it does is logged to the serial console (ttyS0) with a `tiny:` prefix.
# NoCloud: https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
say() { echo "tiny: $*" > /dev/console; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var/run /seed /dev/virtio-ports
mount -t devpts devpts /dev/pts
for module in $(cat /etc/modules); do insmod "/lib/modules/$module" 2>/dev/null; done
ip link set lo up

# udev would make /dev/virtio-ports/NAME; there is no udev here.
for port in /sys/class/virtio-ports/*; do
    [ -e "$port/name" ] && ln -sf "/dev/${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
done

# The seed: the first iso9660 volume labelled cidata (the CD-ROM may take a moment).
seed=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
    dev=$(findfs LABEL=cidata 2>/dev/null) && mount -t iso9660 -o ro "$dev" /seed && seed=$dev && break
    sleep 0.5
done
[ -n "$seed" ] || say "no cidata seed found: the nics stay unconfigured (block devices: $(ls /sys/class/block | tr '\n' ' '))"

if [ -f /seed/meta-data ]; then
    name=$(sed -n 's/^local-hostname:[ ]*//p' /seed/meta-data | tr -d "\"'")
    [ -n "$name" ] && hostname "$name"
fi

# The commands netconfig.awk prints.
nic() {  # MAC NAME: rename the nic with this MAC, bring it up
    for dev in /sys/class/net/*; do
        [ "$(cat "$dev/address")" = "$1" ] || continue
        [ "${dev##*/}" = "$2" ] || ip link set dev "${dev##*/}" name "$2"
        ip link set dev "$2" up && say "nic $2 ($1) up"
        return
    done
    say "no nic has MAC $1"
}
addr() { ip addr add "$2" dev "$1" && say "$1 has $2"; }
route() { ip route add "$2" via "$3" dev "$1" && say "route $2 via $3"; }
dhcp() { udhcpc -b -q -t 10 -T 1 -i "$1" -s /etc/udhcpc.script >/dev/null 2>&1 & }
dns() { echo "nameserver $1" >> /etc/resolv.conf; }
if [ -f /seed/network-config ]; then
    awk -f /etc/netconfig.awk /seed/network-config > /run/net.cmds
    . /run/net.cmds
fi

# The guest agent, restarted should it stop.
agent=/dev/virtio-ports/org.qemu.guest_agent.0
if [ -e "$agent" ]; then
    ( while :; do qemu-ga -m virtio-serial -p "$agent" -f /run/qemu-ga.pid -t /run; sleep 1; done ) &
    say "guest agent on $agent"
else
    say "no $agent: is the channel in the domain XML?"
fi
say "ready"

# PID 1 must not exit; it also reaps the orphans it inherits.
while :; do wait; sleep 5; done
