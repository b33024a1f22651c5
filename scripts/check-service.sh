#!/bin/sh
# `make check-service`: the amd64 .deb as shipped, in a real systemd.
# Builds the package, boots a minimal Debian bookworm (mmdebstrap, cached)
# with systemd-nspawn on a private network, and checks, printing each check
# with its time: install (enabled, not started unconfigured), `waphone init`,
# active within 10 s, `waphone status` for a member of the waphone group (and
# not for others), a Meta-shaped call answered with audio both ways,
# ALSA lines in the journal with no sound card, the watchdog restarting a
# SIGSTOPped daemon, the service back after a container restart, then
# `apt-get remove` stops it and `purge` cleans up.
# Needs root. Env: WAPHONE_CHECK_CACHE (rootfs cache dir), ALSA_WINDOW (s, 60).
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
[ "$(id -u)" -eq 0 ] || { echo "check-service: needs root (mmdebstrap, systemd-nspawn)" >&2; exit 2; }
t0=$(date +%s.%N)
now() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%6.1fs", b - a }'; }
say() { echo "[$(now)] $*"; }
failures=0
ok() { say "ok    $*"; }
bad() { say "FAIL  $*"; failures=$((failures + 1)); }

need=""
command -v mmdebstrap >/dev/null 2>&1 || need="$need mmdebstrap"
command -v systemd-nspawn >/dev/null 2>&1 || need="$need systemd-container"
if [ -n "$need" ]; then
	say "installing:$need"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

# 1. The package and the in-container helper (test PKI, metasim caller).
say "building the amd64 package"
deb=$(./scripts/deb.sh amd64 | grep '\.deb$' | tail -1)
[ -f "$deb" ] || { echo "check-service: no package built" >&2; exit 1; }
work=$(mktemp -d /var/tmp/waphone-check.XXXXXX)
nspawn_pid=""
cleanup() {
	if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
		kill "$nspawn_pid" 2>/dev/null || true
		wait "$nspawn_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
go build -tags nolibopusfile -o "$work/svccheck" ./scripts/svccheck
say "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) and the helper"

# 2. The rootfs, cached: the package's Depends are in it (the container has
# no network), plus what the checks use.
cache=${WAPHONE_CHECK_CACHE:-${XDG_CACHE_HOME:-/var/cache}/waphone-check}
include=systemd,systemd-sysv,dbus,libopus0,libasound2,apt,procps
tarball=$cache/bookworm-minbase-$(echo "$include" | md5sum | cut -c1-8).tar
if [ ! -f "$tarball" ]; then
	say "mmdebstrap bookworm into $tarball (once)"
	mkdir -p "$cache"
	mmdebstrap --quiet --variant=minbase --include="$include" bookworm "$tarball.part.tar" >/dev/null
	mv "$tarball.part.tar" "$tarball"
fi
rootfs=$work/root
mkdir "$rootfs"
tar -C "$rootfs" -xf "$tarball"
cp "$deb" "$rootfs/root/waphone.deb"
cp "$work/svccheck" "$rootfs/usr/local/bin/svccheck"
say "rootfs ready ($(du -sm "$rootfs" | cut -f1) MB)"

boot() {
	systemd-nspawn --quiet -D "$rootfs" --boot --register=no --keep-unit --private-network \
		--console=passive >>"$work/console.log" 2>&1 &
	nspawn_pid=$!
	pid=""
	for _ in $(seq 100); do
		pid=$(ps -o pid= --ppid "$nspawn_pid" 2>/dev/null | tr -d ' ' | head -1)
		[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] && break
		pid=""
		sleep 0.1
	done
	[ -n "$pid" ] || { cat "$work/console.log" >&2; echo "check-service: the container did not boot" >&2; exit 1; }
	# Until systemd in there answers on its bus, then until boot finished.
	state=""
	for _ in $(seq 300); do
		state=$(nsenter -t "$pid" -a systemctl is-system-running --wait 2>/dev/null || true)
		case $state in running | degraded) break ;; esac
		sleep 0.1
	done
	say "container booted: $state (init pid $pid)"
}
# Run a command inside the container, as root, with a clean environment.
ct() { nsenter -t "$pid" -a env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
# Wait up to $1 s for the service to be active; prints the seconds taken.
wait_active() {
	s=$(date +%s.%N)
	for _ in $(seq $(($1 * 10))); do
		if ct systemctl is-active --quiet waphone.service; then
			awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
			return 0
		fi
		sleep 0.1
	done
	return 1
}

boot

# 3. Install: enabled, but not started with no real configuration.
if ct dpkg -i /root/waphone.deb >"$work/dpkg.log" 2>&1; then
	ok "dpkg -i: $(grep -c . "$work/dpkg.log") lines ($(grep 'not configured' "$work/dpkg.log" || echo 'no hint printed'))"
else
	cat "$work/dpkg.log"
	bad "dpkg -i"
fi
enabled=$(ct systemctl is-enabled waphone.service 2>&1 || true)
active=$(ct systemctl is-active waphone.service 2>&1 || true)
if [ "$enabled" = enabled ] && [ "$active" != active ]; then
	ok "enabled, not started unconfigured ($active; ConditionPathExists=/etc/waphone/sip-password)"
else
	bad "after install: $enabled, $active"
fi
groups=$(ct id -nG waphone)
case " $groups " in
*" audio "*" input "* | *" input "*" audio "*) ok "user waphone in groups: $groups" ;;
*) bad "user waphone groups: $groups" ;;
esac

# 4. waphone init, as an owner would run it (flags instead of a terminal);
# the certificate from a test CA, readable by the service's group.
ct svccheck pki -dir /etc/waphone -host sip.test
ct chgrp waphone /etc/waphone/fullchain.pem /etc/waphone/privkey.pem
ct chmod 0640 /etc/waphone/fullchain.pem /etc/waphone/privkey.pem
s=$(date +%s)
echo "check-service-password" | ct waphone init -yes -hostname sip.test -number +12145551869 \
	-cert /etc/waphone/fullchain.pem -key /etc/waphone/privkey.pem -button headset -password-stdin \
	>"$work/init.log" 2>&1 && rc=0 || rc=$?
say "waphone init (exit $rc: doctor's verdict; no headset here) in $(($(date +%s) - s)) s:"
# ALSA's complaints about the missing card are counted below, not shown here.
grep -v '^ALSA lib' "$work/init.log" | sed 's/^/          /'
echo "          (and $(grep -c '^ALSA lib' "$work/init.log" || true) 'ALSA lib' lines from doctor's headset probe)"
perm=$(ct stat -c '%a %U:%G' /etc/waphone/sip-password /etc/waphone/waphone.toml | tr '\n' ' ')
[ "$perm" = "600 root:root 640 root:waphone " ] && ok "sip-password and waphone.toml: $perm" || bad "modes: $perm"

# 5. Active within 10 s of a (re)start.
s=$(date +%s.%N)
ct systemctl restart --no-block waphone.service
if took=$(wait_active 10); then ok "active ${took} s after systemctl restart"; else bad "not active within 10 s"; ct systemctl status --no-pager waphone.service | tail -20; fi
t_alsa=$(date +%s)

# 6. The control socket: the waphone group may, others may not; and a
# broken config does not stop `waphone status`.
ct useradd -m -G waphone alice
ct useradd -m bob
if out=$(ct setpriv --reuid=alice --regid=alice --init-groups waphone status 2>&1); then
	ok "waphone status as alice (group waphone): $(echo "$out" | head -1)"
else
	bad "waphone status as alice: $out"
fi
if out=$(ct setpriv --reuid=bob --regid=bob --init-groups waphone status 2>&1); then
	bad "bob (not in group waphone) could run waphone status"
else
	ok "bob (not in group waphone) refused: $(echo "$out" | grep -o 'permission denied' | head -1)"
fi
ct sh -c 'sed "s/^hostname/hostnme/" /etc/waphone/waphone.toml > /tmp/typo.toml'
if out=$(ct waphone status -config /tmp/typo.toml 2>&1); then
	ok "waphone status with a typo in an unrelated key: $(echo "$out" | head -1)"
else
	bad "status with a typo: $out"
fi

# 7. No sound card: how chatty is ALSA? (Measured, not judged: another
# change owns quieting it.)
window=${ALSA_WINDOW:-60}
say "measuring ALSA lines in the journal for ${window} s (audio = default, no sound card)"
sleep "$window"
ct journalctl -q -u waphone.service --since "@$t_alsa" --no-pager -o cat >"$work/alsa.log" 2>&1 || true
n=$(grep -ci 'alsa' "$work/alsa.log" || true)
total=$(grep -c . "$work/alsa.log" || true)
ok "journal over ${window} s: $n ALSA lines of $total ($(awk -v n="$n" -v w="$window" 'BEGIN { printf "%.1f", n * 60 / w }') per minute)"
grep -i alsa "$work/alsa.log" | sort | uniq -c | sort -rn | head -3 | sed 's/^/          /'

# 8. A Meta-shaped call: metasim in the container calls the service, which
# captures a 440 Hz tone and plays into a WAV file.
echo | ct waphone init -yes -start=false -doctor=false -hostname sip.test -number +12145551869 \
	-cert /etc/waphone/fullchain.pem -key /etc/waphone/privkey.pem -button auto \
	-capture tone:440 -playback wav:/var/lib/waphone/heard.wav >/dev/null
# The container has only loopback: media must bind there.
ct sed -i 's/^bind_address = ""/bind_address = "127.0.0.1"/' /etc/waphone/waphone.toml
ct systemctl restart waphone.service
wait_active 10 >/dev/null || bad "not active after the call config"
s=$(date +%s.%N)
if out=$(ct svccheck call -addr 127.0.0.1:5061 -host sip.test -ca /etc/waphone/ca.pem -heard /var/lib/waphone/heard.wav 2>&1); then
	ok "call answered with audio both ways in $(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s:"
	echo "$out" | sed 's/^/          /'
else
	bad "call: $out"
	ct journalctl -u waphone.service -n 30 --no-pager
fi

# 8b. An upgrade (the same package again): the changed config is kept,
# the running service restarted.
before=$(ct systemctl show -P MainPID waphone.service)
sum=$(ct md5sum /etc/waphone/waphone.toml)
if ct dpkg -i /root/waphone.deb >"$work/upgrade.log" 2>&1 && wait_active 10 >/dev/null &&
	[ "$(ct md5sum /etc/waphone/waphone.toml)" = "$sum" ] &&
	[ "$(ct systemctl show -P MainPID waphone.service)" != "$before" ]; then
	ok "upgrade: config kept (init's edits), service restarted"
else
	cat "$work/upgrade.log"
	bad "upgrade"
fi

# 9. The watchdog: a frozen daemon is restarted by systemd (WatchdogSec=30s).
old=$(ct systemctl show -P MainPID waphone.service)
ct sh -c "kill -STOP $old"
s=$(date +%s)
new=$old
while [ $(($(date +%s) - s)) -lt 60 ]; do
	new=$(ct systemctl show -P MainPID waphone.service)
	if [ "$new" != "$old" ] && [ "$new" != 0 ] && ct systemctl is-active --quiet waphone.service; then break; fi
	sleep 0.5
done
if [ "$new" != "$old" ] && [ "$new" != 0 ]; then
	ok "SIGSTOPped daemon (pid $old) restarted by the watchdog after $(($(date +%s) - s)) s (new pid $new): $(ct journalctl -q -u waphone.service --no-pager -o cat | grep -m1 -i 'watchdog timeout' || true)"
else
	bad "watchdog did not restart pid $old within 60 s"
fi

# 10. A restart of the machine: the enabled, configured service comes back.
ct systemctl poweroff
wait "$nspawn_pid" 2>/dev/null || true
nspawn_pid=""
say "container powered off"
boot
if took=$(wait_active 10); then ok "service active ${took} s after the container's boot finished"; else bad "service not back after a restart"; fi

# 11. apt-get remove stops it (config kept); purge cleans up.
ct apt-get remove -y -qq waphone >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; bad "apt-get remove"; }
active=$(ct systemctl is-active waphone.service 2>&1 || true)
if [ "$active" != active ] && ! ct pgrep -x waphone >/dev/null && ct test -f /etc/waphone/waphone.toml && ! ct test -e /usr/bin/waphone; then
	ok "apt-get remove: stopped ($active), binary gone, config kept"
else
	bad "after remove: $active, $(ct pgrep -ax waphone || true)"
fi
ct apt-get purge -y -qq waphone >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; bad "apt-get purge"; }
left=$(ct sh -c 'ls -d /var/lib/waphone /etc/waphone/sip-password /etc/waphone/waphone.toml /etc/waphone/waphone.toml.old 2>/dev/null' || true)
if [ -z "$left" ]; then
	ok "apt-get purge: state and waphone's own files gone ($(grep -o 'left your own files.*' "$work/purge.log" || echo '/etc/waphone removed'))"
else
	bad "after purge, left: $left"
fi
ct systemctl poweroff
wait "$nspawn_pid" 2>/dev/null || true
nspawn_pid=""

say "done: $failures failure(s)"
[ "$failures" -eq 0 ]
