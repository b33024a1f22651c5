#!/bin/sh
# Runs inside the board VM (from the image's vm-check), as root, with the
# payload disk at /payload: installs waphone (systemd: the .deb, as a user
# would; direct: payload/root, the tree `make install DESTDIR=...` made on
# the host) and runs boardcheck. Output
# goes to the virtio console (hvc0: the host's results file), ending with
# "BOARDCHECK EXIT <status>".
#   guest.sh direct    PID 1, no udev: boardcheck starts waphone as root
#   guest.sh systemd   after a full boot: waphone runs as the shipped
#                      waphone.service, as user waphone, in its sandbox
mode=${1:-direct}
P=/payload
if [ "$mode" = direct ]; then
	mkdir -p /dev/pts /dev/shm
	mountpoint -q /dev/pts || mount -t devpts devpts /dev/pts
	mountpoint -q /run || mount -t tmpfs tmpfs /run
	mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
	ip link set lo up
	hostname waphone-vm
fi
modprobe configfs 2>/dev/null
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
[ -e /dev/hvc0 ] || modprobe virtio_console
i=0
while [ ! -e /dev/hvc0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
out=/dev/hvc0
[ -e $out ] || out=/dev/console

check() {
	echo "guest: kernel $(uname -r) $(uname -m), $(nproc) CPUs, mode $mode, booted in $(cut -d' ' -f1 /proc/uptime) s"
	if [ "$mode" = systemd ]; then
		# The package as shipped: its postinst makes the user and groups,
		# /etc/waphone, reloads udev and enables the unit (not started:
		# not configured yet). The VM has no network: the image holds the
		# package's dependencies already.
		dpkg -i "$P"/waphone_*.deb || return 1
		# What the next boot does with the shipped modules-load.d entry.
		systemctl restart systemd-modules-load.service || return 1
		echo "guest: ALSA major before the unit starts: $(grep -w alsa /proc/devices || echo none)"
		# A uhid device has no USB parent, so the shipped rules'
		# ATTRS{idVendor} cannot match it: this stand-in matches the same
		# vendor ids in the HID device's own name (0003:VVVV:PPPP.NNNN).
		install -m 0644 "$P/vm/61-waphone-vm-uhid.rules" /etc/udev/rules.d/ || return 1
		udevadm control --reload
		systemctl daemon-reload || return 1
	else
		cp -a "$P/root/." / || return 1
	fi
	"$P/bin/boardcheck" -mode "$mode" -waphone /usr/bin/waphone -testdata "$P/testdata"
}
check >$out 2>&1
echo "BOARDCHECK EXIT $?" >$out
