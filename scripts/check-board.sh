#!/bin/sh
# make check-board: waphone against real kernel drivers in a Debian VM
# (qemu, TCG): the button and LED on gpio-sim, the headset's sound on
# snd-aloop, its call button and LEDs on uhid (a real headset's HID
# descriptor), its keys on uinput; metasim plays Meta on the VM's loopback.
# See docs/audio-board.md ("Proven against real drivers").
#   ARCH=amd64|arm64   (default amd64; arm64 runs qemu-system-aarch64 -M virt)
#   MODE=systemd|direct (default systemd: the shipped unit and udev rules;
#                       direct: init=, no udev, waphone as root, faster boot)
#   WAPHONE_VM_CACHE   where the VM image is cached (/var/cache/waphone-board-vm)
#   TIMEOUT            seconds for the whole VM run (default 900)
#   VM_CPU             qemu's -cpu (default qemu64 / cortex-a53: TCG emulates
#                      AVX2, AES-NI and SVE with slow helpers, and -cpu max
#                      left the guest 90 % busy in a call; these need 40-60 %)
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
arch=${ARCH:-amd64}
mode=${MODE:-systemd}
t0=$(date +%s)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
case $arch in
amd64) qemu=qemu-system-x86_64 qpkg=qemu-system-x86 ;;
arm64) qemu=qemu-system-aarch64 qpkg=qemu-system-arm ;;
*) echo "check-board: ARCH $arch: want amd64 or arm64" >&2; exit 2 ;;
esac
need=""
command -v "$qemu" >/dev/null 2>&1 || need="$need $qpkg"
command -v mmdebstrap >/dev/null 2>&1 || need="$need mmdebstrap"
command -v mke2fs >/dev/null 2>&1 || need="$need e2fsprogs"
if [ "$arch" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
	# mmdebstrap runs the arm64 rootfs's maintainer scripts through
	# qemu-user and binfmt_misc, and checks that with arch-test.
	command -v arch-test >/dev/null 2>&1 || need="$need arch-test"
	[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -x /usr/bin/qemu-aarch64-static ] || need="$need qemu-user-static binfmt-support"
fi
if [ -n "$need" ]; then
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
if [ "$arch" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
	[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
	update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
	arch-test arm64 >/dev/null 2>&1 || { echo "check-board: this machine cannot run arm64 programs (binfmt_misc + qemu-user): no arm64 rootfs" >&2; exit 2; }
fi
# mmdebstrap, chroot and the image cache need root.
[ "$(id -u)" -eq 0 ] || { echo "check-board: run as root (mmdebstrap, chroot)" >&2; exit 2; }

work=$(mktemp -d)
qpid=""
cleanup() {
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
payload=$work/payload
mkdir -p "$payload/bin" "$payload/vm" "$payload/testdata"

# waphone and the guest-side driver. amd64: bin/waphone as `make build`
# makes it (linked against libopus0/libasound2, which the image has);
# arm64: the static cross build.
echo "check-board: building waphone and boardcheck for $arch"
if [ "$arch" = amd64 ]; then
	make -s build
	make -s install DESTDIR="$payload/root" >/dev/null
	go build -trimpath -tags nolibopusfile -o "$payload/bin/boardcheck" ./test/vm/boardcheck
else
	./scripts/cross.sh arm64 >/dev/null
	make -s install DESTDIR="$payload/root" >/dev/null # the unit, rules, sysusers, tmpfiles
	install -m 0755 bin/arm64/waphone "$payload/root/usr/bin/waphone"
	# boardcheck links libopus (metasim's media): static, like waphone.
	CGO_ENABLED=1 GOARCH=arm64 CC=aarch64-linux-gnu-gcc PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig \
		go build -trimpath -tags nolibopusfile,netgo,osusergo -ldflags "-s -w -extldflags '-static'" \
		-o "$payload/bin/boardcheck" ./test/vm/boardcheck
fi
if [ "$mode" = systemd ]; then
	# As shipped: the package for this arch (amd64: the dynamic build,
	# arm64: the static one), installed with dpkg in the VM.
	deb=$(./scripts/deb.sh "$arch" | grep '\.deb$' | tail -1)
	[ -f "$deb" ] || { echo "check-board: no $arch package built" >&2; exit 1; }
	cp "$deb" "$payload/"
fi
cp test/vm/guest/guest.sh "$payload/"
cp test/vm/guest/61-waphone-vm-uhid.rules "$payload/vm/"
cp board/testdata/*.hex "$payload/testdata/"
mke2fs -q -t ext4 -L payload -d "$payload" "$work/payload.img" "$(( $(du -sm "$payload" | cut -f1) + 64 ))M"

img=$(test/vm/image.sh "$arch")
t1=$(date +%s)

case $mode in
direct) init="init=/usr/local/sbin/vm-check" ;;
systemd) init="" ;;
*) echo "check-board: MODE $mode: want systemd or direct" >&2; exit 2 ;;
esac
append="root=/dev/vda rw quiet loglevel=4 panic=-1 $init"
# The results come out on a virtio console (hvc0), the kernel's on the
# first serial port (kept in console.log, printed on failure).
if [ "$arch" = amd64 ]; then
	set -- -machine q35,accel=tcg -cpu "${VM_CPU:-qemu64}" -serial "file:$work/console.log" \
		-device virtio-serial-pci -append "console=ttyS0 $append"
else
	set -- -machine virt,accel=tcg -cpu "${VM_CPU:-cortex-a53}" -serial "file:$work/console.log" \
		-device virtio-serial-device -append "console=ttyAMA0 $append"
fi
: >"$work/out.log"
echo "check-board: booting the $arch VM ($mode; $(cat "$img/kernel-version"))"
$qemu "$@" -smp 2 -m 1024 -nodefaults -display none -no-reboot \
	-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
	-drive "file=$img/rootfs.img,if=virtio,format=raw,snapshot=on" \
	-drive "file=$work/payload.img,if=virtio,format=raw,readonly=on" \
	-chardev "file,id=results,path=$work/out.log" -device virtconsole,chardev=results \
	-device virtio-rng-pci -nic none &
qpid=$!
tail -n +1 -f --pid="$qpid" "$work/out.log" | tr -d '\r' &
tpid=$!
timeout=${TIMEOUT:-900}
# boardcheck's summary (or ABORT) is its last word. A guest that does not
# power off soon after is stuck in the kernel (a driver call in D state
# keeps even an exiting process alive): the verdict is in, stop the VM.
done_at=""
while kill -0 "$qpid" 2>/dev/null; do
	now=$(date +%s)
	if [ $((now - t1)) -gt "$timeout" ]; then
		echo "check-board: the VM did not finish within $timeout s" >&2
		kill "$qpid"
		break
	fi
	if [ -z "$done_at" ] && grep -qE '^(boardcheck \(|ABORT )' "$work/out.log"; then
		done_at=$now
	fi
	if [ -n "$done_at" ] && [ $((now - done_at)) -gt 30 ]; then
		echo "check-board: the guest hangs after boardcheck finished (a driver call stuck in the kernel); stopping the VM" >&2
		kill "$qpid"
		break
	fi
	sleep 1
done
wait "$qpid" 2>/dev/null || true
qpid=""
wait "$tpid" 2>/dev/null || true
t2=$(date +%s)
rc=1
grep -q '^BOARDCHECK EXIT 0' "$work/out.log" && rc=0
# Stopped after its summary: the summary is the verdict.
grep -q '^BOARDCHECK EXIT' "$work/out.log" || ! grep -qE '^boardcheck \(.*, 0 failed,' "$work/out.log" || rc=0
if [ "$rc" -ne 0 ]; then
	echo "---- kernel console (last 40 lines)"
	tail -n 40 "$work/console.log" | tr -d '\r'
fi
echo "check-board: $arch $mode: $([ "$rc" -eq 0 ] && echo PASS || echo FAIL); build+image $((t1 - t0)) s, VM $((t2 - t1)) s, total $((t2 - t0)) s"
exit "$rc"
