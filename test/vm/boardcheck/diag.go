//go:build linux

// What the guest's /proc and /sys say, for checks and their failures.

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// alsaState is what /proc/asound says about every open substream.
func alsaState() string {
	var b strings.Builder
	files, _ := filepath.Glob("/proc/asound/card*/pcm*/sub*/hw_params")
	for _, f := range files {
		hp, _ := os.ReadFile(f)
		if strings.TrimSpace(string(hp)) == "closed" {
			continue
		}
		st, _ := os.ReadFile(filepath.Join(filepath.Dir(f), "status"))
		fmt.Fprintf(&b, "%s: %s | %s\n", strings.TrimPrefix(filepath.Dir(f), "/proc/asound/"),
			strings.Join(strings.Fields(string(hp)), " "), strings.Join(strings.Fields(string(st)), " "))
	}
	if b.Len() == 0 {
		return "no open ALSA substream"
	}
	return b.String()
}

// cpuTicks is a process's user+system CPU time in clock ticks (1/100 s).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces): state is field 3.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	var u, s int64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &s)
	return u + s
}

// cpuShare measures, from its start, how busy the guest's CPUs were and
// how much of one CPU waphone and boardcheck (metasim, the recorder) took:
// the sound checks' margin on an emulated CPU.
type cpuShare struct {
	t0          time.Time
	busy0, all0 int64
	phone       int
	phone0, us0 int64
}

func startCPUShare(phonePID int) cpuShare {
	busy, all := guestCPU()
	return cpuShare{t0: time.Now(), busy0: busy, all0: all, phone: phonePID, phone0: cpuTicks(phonePID), us0: cpuTicks(os.Getpid())}
}

func (c cpuShare) String() string {
	busy, all := guestCPU()
	secs := time.Since(c.t0).Seconds() * 100 // clock ticks
	if all == c.all0 || secs <= 0 {
		return "guest CPU unknown"
	}
	return fmt.Sprintf("guest CPUs %.0f%% busy, waphone %.0f%%, boardcheck %.0f%% of a CPU",
		100*float64(busy-c.busy0)/float64(all-c.all0),
		100*float64(cpuTicks(c.phone)-c.phone0)/secs, 100*float64(cpuTicks(os.Getpid())-c.us0)/secs)
}

// guestCPU is /proc/stat's busy and total ticks over all CPUs.
func guestCPU() (busy, all int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		var n int64
		fmt.Sscan(v, &n)
		all += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, all
}

// sndHolders lists the processes with /dev/snd nodes open.
func sndHolders() string {
	var out []string
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		t, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(t, "/dev/snd/") {
			continue
		}
		pid := strings.Split(fd, "/")[2]
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		out = append(out, fmt.Sprintf("%s(%s):%s", strings.TrimSpace(string(comm)), pid, t))
	}
	if len(out) == 0 {
		return "nobody"
	}
	return strings.Join(out, " ")
}

// nodeGroup checks a device node's group and mode.
func nodeGroup(path, group string) (string, error) {
	out, err := exec.Command("stat", "-L", "-c", "%G %a", path).Output()
	if err != nil {
		return "", fmt.Errorf("stat %s: %w", path, err)
	}
	got := strings.TrimSpace(string(out))
	if got != group+" 660" {
		return "", fmt.Errorf("%s is %q, want %q", path, got, group+" 660")
	}
	return got, nil
}

// checkService: the shipped unit's user, groups and sandbox.
func (e *env) checkService() {
	e.r.check("5. waphone.service runs as user waphone with groups audio, gpio, input", func() (string, error) {
		pid := e.phone.pid()
		uid, groups, err := procIDs(pid)
		if err != nil {
			return "", err
		}
		out, _ := exec.Command("id", "-u", "waphone").Output()
		if strings.TrimSpace(string(out)) != uid {
			return "", fmt.Errorf("pid %d runs as uid %s", pid, uid)
		}
		for _, g := range []string{"audio", "gpio", "input"} {
			out, err := exec.Command("getent", "group", g).Output()
			if err != nil {
				return "", fmt.Errorf("group %s: %w", g, err)
			}
			gid := strings.Split(strings.TrimSpace(string(out)), ":")[2]
			found := false
			for _, x := range groups {
				found = found || x == gid
			}
			if !found {
				return "", fmt.Errorf("pid %d lacks group %s (%s): %v", pid, g, gid, groups)
			}
		}
		dp, _ := exec.Command("systemctl", "show", "-p", "DevicePolicy", "-p", "DeviceAllow", "--value", "waphone.service").Output()
		return fmt.Sprintf("uid %s, groups %v; %s", uid, groups, strings.Join(strings.Fields(string(dp)), " ")), nil
	})
}
