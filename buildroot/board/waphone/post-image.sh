#!/bin/sh
# Runs after Buildroot's Raspberry Pi post-image script made sdcard.img:
# add a block map so `bmaptool copy` flashes only the used blocks.
set -e
img="${BINARIES_DIR}/sdcard.img"
if [ -f "${img}" ] && command -v bmaptool >/dev/null 2>&1; then
	bmaptool create -o "${img}.bmap" "${img}"
fi
