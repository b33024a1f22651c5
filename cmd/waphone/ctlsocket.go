package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/pelletier/go-toml/v2"

	"github.com/waphone/waphone/config"
)

// controlSocketFlags adds -config and -socket to a control command
// (answer, hangup, mute, status, dtmf) and returns what finds the socket
// after Parse. These commands only need the socket's path: -socket wins,
// else phone.control_socket is read leniently from the config, else the
// default. A typo in an unrelated key, or a config the admin may not read,
// must not stop `waphone status` on a phone that is running fine.
func controlSocketFlags(fs *flag.FlagSet) func(stderr io.Writer) string {
	path := fs.String("config", defaultConfig, "config file (TOML); only phone.control_socket is read")
	socket := fs.String("socket", "", "the daemon's control socket (default: phone.control_socket from -config, else "+config.Default().Phone.ControlSocket+")")
	return func(stderr io.Writer) string {
		if *socket != "" {
			return *socket
		}
		return socketFromConfig(*path, stderr)
	}
}

func socketFromConfig(path string, stderr io.Writer) string {
	def := config.Default().Phone.ControlSocket
	raw, err := os.ReadFile(path)
	if err != nil {
		return def // no config (or not ours to read): the unit's socket is the default
	}
	var c struct {
		Phone struct {
			ControlSocket string `toml:"control_socket"`
		} `toml:"phone"`
	}
	if err := toml.Unmarshal(raw, &c); err != nil {
		fmt.Fprintf(stderr, "waphone: %s is not valid TOML (%v); trying %s\n", path, err, def)
		return def
	}
	if c.Phone.ControlSocket == "" {
		return def
	}
	return c.Phone.ControlSocket
}
