#!/bin/sh
# Builds waphone's Debian packages with nfpm (packaging/nfpm.yaml):
#   scripts/deb.sh [amd64] [arm64] [armhf]      (default: all three)
# Output: dist/waphone_<version>-1_<arch>.deb.
#   amd64: the native `make build` binary, dynamically linked (libc6,
#          libopus0; libasound2 is dlopen()ed by miniaudio): Depends on them.
#   arm64: the static `make arm64` binary, no Depends.
#   armhf: the static ARMv6 `make armv6` binary, for Raspberry Pi OS 32-bit
#          (whose armhf is ARMv6 hard-float; a static soft-float-ABI binary
#          runs there and on Debian armhf alike), no Depends.
# lintian runs on each package when installed (apt-get install lintian);
# the tags left are explained in docs/build.md.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
archs=${*:-amd64 arm64 armhf}
NFPM=${NFPM:-go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2}
MAINTAINER=${DEB_MAINTAINER:-waphone maintainers <maintainers@waphone.invalid>}
LICENSE=${DEB_LICENSE:-not yet chosen}

# A Debian version from git: v1.2.3[-N-gHASH] -> 1.2.3[+N.gHASH];
# no tag -> 0~gitYYYYMMDD.HASH. -dirty becomes +dirty.
describe=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
if tag=$(git describe --tags --dirty --match 'v[0-9]*' 2>/dev/null); then
	version=$(echo "$tag" | sed -e 's/^v//' -e 's/-\([0-9]*\)-g/+\1.g/' -e 's/-dirty$/+dirty/')
else
	date=$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d)
	version=$(echo "0~git$date.$describe" | sed 's/-dirty$/+dirty/')
fi
VERSION=$describe
export VERSION

# The native binary: the amd64 package's, and the one that prints the
# example config and the usage for the man page on any host.
make -s build >/dev/null
native=$root/bin/waphone
mkdir -p dist
for arch in $archs; do
	case $arch in
	amd64)
		[ "$(dpkg --print-architecture)" = amd64 ] || {
			echo "deb.sh: the amd64 package uses the native build; this host is $(dpkg --print-architecture)" >&2
			exit 2
		}
		# `make build`'s flags, plus PIE (Debian's hardening default).
		mkdir -p bin/deb-amd64
		go build -trimpath -buildmode=pie -tags nolibopusfile \
			-ldflags "-X main.version=$describe -X main.commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
			-o bin/deb-amd64/waphone ./cmd/waphone
		bin=$root/bin/deb-amd64/waphone
		;;
	arm64) ./scripts/cross.sh arm64 >/dev/null && bin=$root/bin/arm64/waphone ;;
	armhf) ./scripts/cross.sh armv6 >/dev/null && bin=$root/bin/armv6/waphone ;;
	*)
		echo "deb.sh: unknown arch $arch (want amd64, arm64, armhf)" >&2
		exit 2
		;;
	esac
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT
	cp "$bin" "$stage/waphone"
	case $arch in
	amd64) strip --strip-unneeded "$stage/waphone" ;;
	*) ;; # cross.sh already built with -s -w; the host's strip cannot read ARM
	esac
	cp packaging/lintian-overrides "$stage/"
	cp systemd/waphone.service systemd/waphone.sysusers systemd/waphone.tmpfiles \
		systemd/60-waphone-gpio.rules systemd/60-waphone-headset.rules systemd/waphone-modules.conf \
		packaging/postinst packaging/prerm packaging/postrm README.md docs/setup.md "$stage/"

	# The conffile: every key with its comment, from the binary itself, with
	# the password as the unit's credential (a relative name) rather than a
	# path the service user could not read.
	{
		cat <<-'HEAD'
			# /etc/waphone/waphone.toml: waphone's configuration.
			# The easy way: `sudo waphone init` asks the few things only you know and
			# rewrites this file. The SIP password is never in here: it lives in
			# /etc/waphone/sip-password (root's, 0600) and systemd hands it to the
			# service as the credential "sip-password" (LoadCredential=). The service
			# starts only once that file exists.

		HEAD
		"$native" example-config
	} >"$stage/waphone.toml"
	sed -i 's#^password_file = "/etc/waphone/sip-password"#password_file = "sip-password"#' "$stage/waphone.toml"
	grep -q '^password_file = "sip-password"$' "$stage/waphone.toml" || {
		echo "deb.sh: example-config's password_file line changed; update the sed above" >&2
		exit 1
	}

	# The man page: the usage text, as roff.
	{
		printf '.TH WAPHONE 1 "%s" "waphone %s" "User Commands"\n' "$(git log -1 --format=%cd --date=format:%Y-%m-%d 2>/dev/null || date +%F)" "$version"
		printf '.SH NAME\nwaphone \\- WhatsApp Business Calling desk phone\n.SH SYNOPSIS\n.B waphone\n.I command\n[\\fIflags\\fR]\n'
		printf '.SH DESCRIPTION\n.nf\n'
		"$native" help | sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
		printf '.fi\n.SH FILES\n.TP\n/etc/waphone/waphone.toml\nthe configuration (\\fBwaphone example-config\\fR prints every key)\n'
		printf '.TP\n/etc/waphone/sip-password\nMeta'"'"'s SIP password (0600 root), handed to the service as the systemd credential \\fIsip-password\\fR\n'
		printf '.TP\n/var/lib/waphone\ncall history and the ACME cache\n'
		printf '.SH SEE ALSO\n/usr/share/doc/waphone/README.md, /usr/share/doc/waphone/setup.md\n'
	} | gzip -9n >"$stage/waphone.1.gz"

	{
		printf 'waphone (%s-1) unstable; urgency=medium\n\n' "$version"
		printf '  * Built from git %s.\n\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
		printf ' -- %s  %s\n' "$MAINTAINER" "$(git log -1 --format=%cD 2>/dev/null || date -R)"
	} | gzip -9n >"$stage/changelog.Debian.gz"

	cat >"$stage/copyright" <<-EOF2
		Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
		Upstream-Name: waphone
		Source: https://github.com/waphone/waphone
		Comment: The binary links Go modules under their own licenses (BSD, MIT,
		 Apache-2.0; see docs/dependencies.md in the source) and, in the static
		 ARM builds, libopus (BSD-3-Clause) and alsa-lib (LGPL-2.1+).

		Files: *
		Copyright: 2026 The waphone authors
		License: $LICENSE
		 The waphone authors have not published a license text yet.
	EOF2

	sed -e "s|\${DEB_ARCH}|$arch|g" -e "s|\${DEB_VERSION}|$version|g" \
		-e "s|\${DEB_MAINTAINER}|$MAINTAINER|g" -e "s|\${DEB_LICENSE}|$LICENSE|g" packaging/nfpm.yaml >"$stage/nfpm.yaml"
	echo "depends:" >>"$stage/nfpm.yaml"
	echo "  - systemd" >>"$stage/nfpm.yaml"
	# The static builds carry alsa-lib but read the system's ALSA
	# configuration (/usr/share/alsa): without it no card opens.
	[ "$arch" = amd64 ] || echo "  - libasound2-data" >>"$stage/nfpm.yaml"
	if [ "$arch" = amd64 ]; then
		# The newest glibc symbol version the binary needs, as dpkg-shlibdeps would.
		glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
		cat >>"$stage/nfpm.yaml" <<-EOF2
			  - libc6 (>= $glibc)
			  - libopus0 (>= 1.1)
			  - libasound2 (>= 1.0.16) | libasound2t64
		EOF2
	fi
	deb=$root/dist/waphone_${version}-1_$arch.deb
	rm -f "$deb"
	(cd "$stage" && $NFPM pkg --packager deb --config nfpm.yaml --target "$deb" >/dev/null)
	rm -rf "$stage"
	trap - EXIT
	echo "$deb"
	if command -v lintian >/dev/null 2>&1; then
		lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' || true
	fi
done
