package testbed

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is one child of the test bed. Every child runs in its own process
// group and is killed by the kernel if the test bed's process dies
// (Pdeathsig), so no child outlives a test run even on SIGKILL or panic.
type Process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done is closed
}

// StartProcess starts bin with args, its output appended to logDir/name.log.
func StartProcess(name, logDir, bin string, args ...string) (*Process, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s binary: %w (run `make tools`)", name, err)
	}
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, with its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *Process) Stop(grace time.Duration) {
	if done, _ := p.Exited(); done {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// tail returns the last bytes of the process's log, for error messages.
func (p *Process) Tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	const n = 2000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// FreePort finds a free port on 127.0.0.1 for a child to bind. The port is
// released before the child binds it, so it is taken below the kernel's
// ephemeral range: a port the kernel hands out (":0") is also what it picks
// as the local port of outgoing connections, and the child's own first
// connections to the API server once took the port it was about to listen
// on. Other tests' FreePort calls may still race for the same port: the
// window is small, and a clash shows as a clear start-up error.
func FreePort() (int, error) {
	low := ephemeralLow()
	for range 50 {
		port := freePortBase + rand.IntN(low-freePortBase) // the package's source: safe for concurrent use
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortBase is the lowest port FreePort hands out (above the usual
// fixed ports of local services).
const freePortBase = 20000

// ephemeralLow is the low end of the kernel's ephemeral port range
// (32768 on Linux by default).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > freePortBase+1000 {
				return n
			}
		}
	}
	return 32768
}

// waitFor polls check until it returns nil, the process exits, or ctx ends.
func waitFor(ctx context.Context, p *Process, what string, check func(context.Context) error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		if p != nil {
			if done, err := p.Exited(); done {
				return fmt.Errorf("%s exited while waiting for %s (%v); log %s:\n%s", p.name, what, err, p.log, p.Tail())
			}
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("timed out waiting for %s: %v", what, last)
			if p != nil {
				msg += fmt.Sprintf("; log %s:\n%s", p.log, p.Tail())
			}
			return errors.New(msg)
		case <-tick.C:
		}
	}
}

// PID is the process's ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL to the process group and waits for the process to
// end: a crash, for tests that check what survives one.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Log is the path of the process's combined output.
func (p *Process) Log() string { return p.log }

// RSSKiB reads a process's resident set size from /proc, in KiB (0 if gone).
func RSSKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb
		}
	}
	return 0
}
