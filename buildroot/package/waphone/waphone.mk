################################################################################
#
# waphone
#
################################################################################

WAPHONE_VERSION = 0.1.0
# The external tree lives in waphone's own repository: build that checkout.
WAPHONE_SITE = $(BR2_EXTERNAL_WAPHONE_PATH)/..
WAPHONE_SITE_METHOD = local
WAPHONE_LICENSE = Proprietary
WAPHONE_GOMOD = github.com/waphone/waphone
WAPHONE_BUILD_TARGETS = cmd/waphone
WAPHONE_DEPENDENCIES = opus alsa-lib
# Opus without libopusfile; the pure-Go resolver avoids glibc NSS at run time.
# nodemo: no demo, metasim or test PKI on the board; nethttpomithttp2: no
# bundled HTTP/2 (the console speaks HTTP/1.1) (docs/build.md, "Size").
WAPHONE_TAGS = nolibopusfile netgo osusergo nodemo nethttpomithttp2
WAPHONE_MA_LEAN = -DMA_NO_DECODING -DMA_NO_ENCODING -DMA_NO_GENERATION -DMA_NO_RESOURCE_MANAGER -DMA_NO_NODE_GRAPH -DMA_NO_ENGINE
WAPHONE_LDFLAGS = -X main.version=$(WAPHONE_VERSION)
# miniaudio links ALSA directly instead of dlopen()ing it, and leaves out
# the decoders, encoders, engine and node graph we do not use.
WAPHONE_GO_ENV = \
	CGO_CFLAGS="$(TARGET_CFLAGS) -DMA_NO_RUNTIME_LINKING -DMA_NO_PULSEAUDIO -DMA_NO_JACK $(WAPHONE_MA_LEAN)" \
	CGO_LDFLAGS="$(TARGET_LDFLAGS) -lasound -ldl -lm -lpthread"

define WAPHONE_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/systemd/waphone.service \
		$(TARGET_DIR)/usr/lib/systemd/system/waphone.service
	$(INSTALL) -D -m 0644 $(@D)/systemd/waphone.tmpfiles \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/waphone.conf
	$(INSTALL) -D -m 0644 $(@D)/systemd/60-waphone-gpio.rules \
		$(TARGET_DIR)/usr/lib/udev/rules.d/60-waphone-gpio.rules
	$(INSTALL) -D -m 0644 $(@D)/systemd/60-waphone-headset.rules \
		$(TARGET_DIR)/usr/lib/udev/rules.d/60-waphone-headset.rules
	$(INSTALL) -D -m 0644 $(@D)/systemd/waphone-modules.conf \
		$(TARGET_DIR)/usr/lib/modules-load.d/waphone.conf
endef

define WAPHONE_USERS
	waphone -1 waphone -1 * /var/lib/waphone - audio,gpio,input waphone desk phone
endef

$(eval $(golang-package))
