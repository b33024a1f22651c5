#!/bin/sh
# Cross-compiles a fully static waphone for a Raspberry Pi:
#   scripts/cross.sh arm64|armv7|armv6
# Output: bin/<arch>/waphone. Toolchains and libopus come from Debian's
# multiarch packages; Debian ships no static libasound, so alsa-lib is built
# static from Debian's own source package into .cache/alsa-<arch> once.
# The recipe is explained in docs/build.md. Board builds leave the demo,
# metasim and the test PKI out (tag nodemo); DEMO=1 keeps them (smoke-arm).
set -eu
arch=${1:?usage: scripts/cross.sh arm64|armv7|armv6}
cd "$(dirname "$0")/.."
root=$(pwd)

case $arch in
arm64) deb=arm64 triple=aarch64-linux-gnu goarch=arm64 goarm="" extra_tags="" extra_cflags="" ;;
armv7) deb=armhf triple=arm-linux-gnueabihf goarch=arm goarm=7 extra_tags="" extra_cflags="" ;;
# Debian armhf is ARMv7+; the Pi Zero W / Pi 1 core (ARM1176) needs armel.
armv6) deb=armel triple=arm-linux-gnueabi goarch=arm goarm=6 extra_tags=",noasm" extra_cflags="-DMA_NO_NEON" ;;
*) echo "unknown arch $arch (want arm64, armv7, armv6)" >&2; exit 2 ;;
esac

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=""
command -v "$triple-gcc" >/dev/null 2>&1 || need="$need crossbuild-essential-$deb"
dpkg -s "libopus-dev:$deb" >/dev/null 2>&1 || need="$need libopus-dev:$deb"
if [ -n "$need" ]; then
	echo "installing:$need" >&2
	dpkg --print-foreign-architectures | grep -qx "$deb" || $SUDO dpkg --add-architecture "$deb"
	$SUDO apt-get update -qq || true # a mirror mid-sync for one arch must not stop us
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need || {
		echo "cross.sh: could not install$need (Debian mirror?)" >&2
		exit 3
	}
fi

# alsa-lib, static, from Debian's source package. Built for prefix /usr and
# staged under .cache: the paths alsa-lib compiles in (alsa.conf in
# /usr/share/alsa, plugins in /usr/lib/alsa-lib) must be the board's, not
# this build tree's — with the tree's, the board's alsa-lib found no
# configuration and no sound card at all (seen in make check-board ARCH=arm64).
stage=$root/.cache/alsa-$arch
alsa=$stage/usr
if [ ! -f "$alsa/lib/libasound.a" ]; then
	src=$root/.cache/alsa-src
	if [ ! -d "$src" ]; then
		mkdir -p "$src"
		if ! ls /etc/apt/sources.list.d/*src* >/dev/null 2>&1 && ! grep -qs '^deb-src' /etc/apt/sources.list; then
			printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
				$SUDO tee /etc/apt/sources.list.d/waphone-src.sources >/dev/null
			$SUDO apt-get update -qq || true
		fi
		(cd "$src" && apt-get source -qq alsa-lib >/dev/null)
	fi
	dir=$(find "$src" -maxdepth 1 -type d -name 'alsa-lib-*' | head -1)
	build=$root/.cache/alsa-build-$arch
	rm -rf "$build" && cp -a "$dir" "$build"
	(cd "$build" && ./configure -q --host="$triple" --prefix=/usr --sysconfdir=/etc --enable-static --disable-shared \
		--disable-python --disable-topology --disable-ucm --disable-alisp >/dev/null &&
		make -s -j"$(nproc)" >/dev/null 2>&1 && rm -rf "$stage" && make -s install DESTDIR="$stage" >/dev/null 2>&1)
	rm -rf "$build"
fi

# miniaudio without the decoders, encoders, engine and node graph (unused).
ma_lean="-DMA_NO_DECODING -DMA_NO_ENCODING -DMA_NO_GENERATION -DMA_NO_RESOURCE_MANAGER -DMA_NO_NODE_GRAPH -DMA_NO_ENGINE"
# nethttpomithttp2: no bundled HTTP/2 in net/http (~0.55 MB; the console
# and webhook servers speak HTTP/1.1 only, docs/build.md "Size").
board_tags=",nodemo,nethttpomithttp2"
[ "${DEMO:-0}" = 1 ] && board_tags=",nethttpomithttp2"

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "bin/$arch"
CGO_ENABLED=1 GOOS=linux GOARCH=$goarch GOARM=$goarm CC=$triple-gcc \
	PKG_CONFIG_LIBDIR=/usr/lib/$triple/pkgconfig:/usr/share/pkgconfig \
	CGO_CFLAGS="-O2 -DMA_NO_RUNTIME_LINKING -DMA_NO_PULSEAUDIO -DMA_NO_JACK $ma_lean $extra_cflags -I$alsa/include" \
	CGO_LDFLAGS="-L$alsa/lib -lasound -ldl -lm -lpthread" \
	go build -trimpath -tags "nolibopusfile,netgo,osusergo$board_tags$extra_tags" \
	-ldflags "-s -w -X main.version=$version -X main.commit=$commit -extldflags '-static -lm'" \
	-o "bin/$arch/waphone" ./cmd/waphone 2>&1 |
	grep -v 'statically linked applications requires at runtime\|in statically linked\|libasound.a(\|^# github.com' || true
test -x "bin/$arch/waphone"
file "bin/$arch/waphone"
