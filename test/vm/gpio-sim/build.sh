#!/bin/sh
# Builds gpio-sim.ko for kernel $1 inside a chroot that has build-essential,
# linux-headers-$1 and linux-source-6.1: the two source files come out of
# Debian's linux-source tarball (the kernel's own version), patched for an
# out-of-tree build. Output: $2/gpio-sim.ko.
set -eu
kver=$1 out=$2
here=$(dirname "$0")
src=$(mktemp -d)
tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$src" --strip-components=1 --wildcards \
	'*/drivers/gpio/gpio-sim.c' '*/drivers/gpio/gpiolib.h' '*/kernel/irq/irq_sim.c'
cp "$here/Kbuild" "$src/Kbuild"
cp "$src/drivers/gpio/gpio-sim.c" "$src/gpio-sim-core.c"
cp "$src/kernel/irq/irq_sim.c" "$src/irq_sim.c"
# irq_to_desc() is not exported to modules; generic_handle_irq() is the
# exported way to run the simulated interrupt's handler.
sed -i 's/handle_simple_irq(irq_to_desc(\([^)]*\)))/generic_handle_irq(\1)/' "$src/irq_sim.c"
grep -q 'generic_handle_irq(' "$src/irq_sim.c" || { echo "irq_sim.c: patch did not apply" >&2; exit 1; }
# gpio-sim.c includes gpiolib's private header (struct gpio_desc) from its
# own directory; linux-headers does not ship it.
cp "$src/drivers/gpio/gpiolib.h" "$src/gpiolib.h"
make -s -C "/usr/src/linux-headers-$kver" M="$src" modules
mkdir -p "$out"
cp "$src/gpio-sim.ko" "$out/"
rm -rf "$src"
