#!/bin/sh
# Runs Buildroot's own utils/check-package on our BR2_EXTERNAL tree.
# BUILDROOT=/path/to/buildroot (a checkout; nothing of it is committed here).
set -eu
cd "$(dirname "$0")/../buildroot"
br=${BUILDROOT:?set BUILDROOT to a Buildroot source checkout}
# check-package imports these (Debian: python3-magic flake8 shellcheck).
/usr/bin/python3 -c 'import magic, flake8' 2>/dev/null || {
	echo "check-package needs python3-magic and flake8 (and shellcheck): apt-get install python3-magic flake8 shellcheck" >&2
	exit 2
}
# shellcheck disable=SC2046
/usr/bin/python3 "$br/utils/check-package" -b $(find . \( -type f -o -type l \) | sed 's#^\./##')
