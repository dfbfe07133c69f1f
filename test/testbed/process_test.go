package testbed

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// When run as the helper, the test binary starts a long sleep through
// startProcess, prints its PID and blocks until killed.
func TestMain(m *testing.M) {
	if os.Getenv("TESTBED_PROCESS_HELPER") == "1" {
		p, err := StartProcess("sleep", os.TempDir(), "/bin/sleep", "600")
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(p.cmd.Process.Pid)
		select {}
	}
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie is dead but not yet reaped by init.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat))
	return len(fields) > 2 && fields[2] != "Z"
}

// A child must not outlive the test bed's process, even when that process
// is killed with SIGKILL and runs no clean-up at all.
func TestChildDiesWithOwnerOnSIGKILL(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	owner := exec.Command(self, "-test.run=^$")
	owner.Env = append(os.Environ(), "TESTBED_PROCESS_HELPER=1")
	out, err := owner.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Process.Kill(); _ = owner.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper said %q", line)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	if !alive(child) {
		t.Fatalf("child %d not running before the owner is killed", child)
	}
	if err := owner.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = owner.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d outlived its owner by 10s", child)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStopEndsProcessGroup(t *testing.T) {
	// A shell that ignores SIGTERM and starts a grandchild: stop must
	// escalate to SIGKILL and take the whole group.
	dir := t.TempDir()
	p, err := StartProcess("stubborn", dir, "/bin/sh", "-c", `trap "" TERM; sleep 600 & echo $! ; wait`)
	if err != nil {
		t.Fatal(err)
	}
	var grandchild int
	deadline := time.Now().Add(5 * time.Second)
	for grandchild == 0 {
		b, _ := os.ReadFile(p.log)
		grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		if time.Now().After(deadline) {
			t.Fatal("the shell never reported its child")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { _ = syscall.Kill(grandchild, syscall.SIGKILL) })
	p.Stop(500 * time.Millisecond)
	if done, _ := p.Exited(); !done {
		t.Fatal("process still running after stop")
	}
	deadline = time.Now().Add(5 * time.Second)
	for alive(grandchild) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still running after stop", grandchild)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
