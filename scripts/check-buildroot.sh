#!/bin/sh
# Runs Buildroot's own utils/check-package on our BR2_EXTERNAL tree.
# BUILDROOT=/path/to/buildroot (a checkout; nothing of it is committed here).
set -eu
cd "$(dirname "$0")/../buildroot"
br=${BUILDROOT:?set BUILDROOT to a Buildroot source checkout}
# shellcheck disable=SC2046
/usr/bin/python3 "$br/utils/check-package" -b $(find . \( -type f -o -type l \) | sed 's#^\./##')
