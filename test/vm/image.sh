#!/bin/sh
# Builds the board-check VM image for ARCH (amd64 or arm64) unless the cache
# already holds one made by the same scripts:
#   test/vm/image.sh ARCH  ->  prints the cache directory holding
#   vmlinuz, initrd.img and rootfs.img (ext4, used read-only: qemu -snapshot).
# A Debian bookworm rootfs (mmdebstrap) with Debian's own kernel, systemd,
# udev, alsa-utils and the libraries bin/waphone links against, plus
# gpio-sim.ko built out of tree for that kernel (Debian leaves it off).
# Cache: $WAPHONE_VM_CACHE (default /var/cache/waphone-board-vm), keyed by a
# hash of test/vm/image.sh, test/vm/image/ and test/vm/gpio-sim/.
set -eu
arch=${1:-amd64}
here=$(cd "$(dirname "$0")" && pwd)
cache=${WAPHONE_VM_CACHE:-/var/cache/waphone-board-vm}
key=$(cat "$here/image.sh" "$here"/image/* "$here"/gpio-sim/* | sha256sum | cut -c1-16)
dir=$cache/$arch-$key
if [ -f "$dir/rootfs.img" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ]; then
	echo "$dir"
	exit 0
fi
case $arch in
amd64) kpkg=linux-image-amd64 ;;
arm64) kpkg=linux-image-arm64 ;;
*) echo "image.sh: unknown arch $arch" >&2; exit 2 ;;
esac
command -v mmdebstrap >/dev/null 2>&1 && command -v mke2fs >/dev/null 2>&1 || {
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap e2fsprogs >/dev/null
}
mkdir -p "$cache"
work=$(mktemp -d "$cache/build-$arch.XXXXXX")
trap 'rm -rf "$work"' EXIT
mirror="deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main"
t0=$(date +%s)
echo "board VM: building the $arch image (once; cached in $dir)" >&2

# The rootfs. hid-generic, evdev, uhid, uinput, snd-aloop: all Debian modules.
# Kept in the cache (keyed by the package list): an image rebuilt because a
# script changed does not download and unpack it again.
pkgs="$kpkg,systemd,systemd-sysv,udev,kmod,iproute2,procps,alsa-utils,libasound2,libopus0"
root=$cache/rootfs-$arch-$(echo "$pkgs" | sha256sum | cut -c1-12)
if [ ! -f "$root/.complete" ]; then
	rm -rf "$root"
	mmdebstrap --quiet --arch="$arch" --variant=minbase \
		--include="$pkgs" \
		--customize-hook='echo waphone-vm >"$1/etc/hostname"' \
		--customize-hook='printf "/dev/vda / ext4 rw,noatime 0 1\n" >"$1/etc/fstab"' \
		--customize-hook='passwd --root "$1" --delete root >/dev/null' \
		bookworm "$root" "$mirror" >&2
	touch "$root/.complete"
fi

kver=$(ls "$root/lib/modules" | head -1)
[ -n "$kver" ] || { echo "image.sh: no kernel in the rootfs" >&2; exit 1; }

# gpio-sim.ko for exactly that kernel, in a throwaway build chroot (cached
# by kernel version: the rootfs may be rebuilt more often than the module).
ko=$cache/gpio-sim-$kver-$(cat "$here"/gpio-sim/* | sha256sum | cut -c1-12).ko
if [ ! -f "$ko" ]; then
	echo "board VM: building gpio-sim.ko for $kver" >&2
	builder=$cache/builder-$arch-$kver
	if [ ! -f "$builder/.complete" ]; then
		rm -rf "$builder"
		mmdebstrap --quiet --arch="$arch" --variant=apt \
			--include="build-essential,linux-headers-$kver,linux-source-6.1,xz-utils" \
			bookworm "$builder" "$mirror" >&2
		touch "$builder/.complete"
	fi
	rm -rf "$builder/build" && cp -a "$here/gpio-sim" "$builder/build"
	chroot "$builder" sh /build/build.sh "$kver" /build/out >&2
	cp "$builder/build/out/gpio-sim.ko" "$ko.tmp" && mv "$ko.tmp" "$ko"
	rm -rf "$builder" # 600 MB; the module is cached
fi
install -D -m 0644 "$ko" "$root/lib/modules/$kver/updates/gpio-sim.ko"
chroot "$root" depmod "$kver"

# The fixed guest side: vm-check runs the payload disk's guest.sh.
install -D -m 0755 "$here/image/vm-check" "$root/usr/local/sbin/vm-check"
install -D -m 0644 "$here/image/vm-check.service" "$root/etc/systemd/system/vm-check.service"
ln -sf /etc/systemd/system/vm-check.service "$root/etc/systemd/system/multi-user.target.wants/vm-check.service"
# Nothing that only slows a 30 s boot down.
for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
	systemd-timesyncd.service getty@tty1.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$u"
done
rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*

mkdir -p "$work/out"
cp "$root/boot/vmlinuz-$kver" "$work/out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/out/initrd.img"
chmod 0644 "$work/out/vmlinuz" "$work/out/initrd.img"
size=$(( $(du -sm "$root" | cut -f1) * 13 / 10 + 200 ))
mke2fs -q -t ext4 -L waphone-vm -d "$root" "$work/out/rootfs.img" "${size}M" >/dev/null
echo "$kver" >"$work/out/kernel-version"
# One image per arch: the new one replaces those of older scripts.
rm -rf "$cache/$arch"-*
mv "$work/out" "$dir"
echo "board VM: $arch image built in $(( $(date +%s) - t0 )) s ($kver)" >&2
echo "$dir"
