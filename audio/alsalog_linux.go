package audio

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>

extern void waphoneALSAError(char *file, int line, char *function, int err, char *msg);

// alsa-lib prints its errors with fprintf(stderr) unless a handler is set:
// without a sound card that is dozens of "cannot find card '0'" lines per
// device probe. This handler formats them and hands them to Go.
static void waphone_alsa_handler(const char *file, int line, const char *function, int err, const char *fmt, ...) {
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	waphoneALSAError((char *)file, line, (char *)function, err, buf);
}

typedef void (*waphone_alsa_handler_t)(const char *, int, const char *, int, const char *, ...);

// Statically linked (the ARM builds: MA_NO_RUNTIME_LINKING) the weak
// reference resolves to alsa-lib's own function; dynamically, miniaudio
// dlopen()s libasound.so.2 and so do we (the same, refcounted library).
extern int snd_lib_error_set_handler(waphone_alsa_handler_t) __attribute__((weak));

static int waphone_alsa_route(void) {
	int (*set)(waphone_alsa_handler_t) = snd_lib_error_set_handler;
	if (!set) {
		void *h = dlopen("libasound.so.2", RTLD_NOW | RTLD_GLOBAL);
		if (!h) return -1;
		set = (int (*)(waphone_alsa_handler_t))dlsym(h, "snd_lib_error_set_handler");
		if (!set) return -2;
	}
	return set(waphone_alsa_handler);
}
*/
import "C"

//export waphoneALSAError
func waphoneALSAError(file *C.char, line C.int, function *C.char, errno C.int, msg *C.char) {
	alsaMessages.note(C.GoString(function), C.GoString(msg), int(errno))
}

// routeALSA installs the handler; false when there is no alsa-lib at all.
func routeALSA() bool { return C.waphone_alsa_route() == 0 }
