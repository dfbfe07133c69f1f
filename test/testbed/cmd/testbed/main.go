// Command testbed runs the local cluster for `make testbed-up`,
// `make testbed-down` and `make demo`.
//
//	testbed up [--detach]   start; with --detach, return once ready and keep running in the background
//	testbed down            stop a detached test bed
//	testbed demo            start, apply the samples, print the traffic split until Ctrl-C (DEMO_ONCE=1: once)
//	testbed receive [ADDR]  print the webhooks splitter sends (notifications, hooks) to 127.0.0.1:9999 or ADDR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"splitter.dev/splitter/test/testbed"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		fs := flag.NewFlagSet("up", flag.ExitOnError)
		detach := fs.Bool("detach", false, "return once ready; the test bed keeps running until `testbed down`")
		_ = fs.Parse(os.Args[2:])
		if *detach {
			err = upDetached()
		} else {
			err = runForeground(false)
		}
	case "down":
		err = down()
	case "demo":
		err = runForeground(true)
	case "receive":
		err = receive(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testbed up [--detach] | down | demo | receive [127.0.0.1:PORT]")
	os.Exit(2)
}

func config() (testbed.Config, error) {
	cfg, err := testbed.ConfigFromEnv()
	if err != nil {
		return cfg, err
	}
	if cfg.StateDir == "" {
		cfg.StateDir = ".testbed"
	}
	cfg.Progress = os.Stdout
	logger := crzap.New(crzap.UseDevMode(true), crzap.WriteTo(os.Stderr))
	ctrl.SetLogger(logger)
	cfg.MeshSim.Log = logger.WithName("meshsim")
	return cfg, nil
}

func pidFile(cfg testbed.Config) string { return filepath.Join(cfg.StateDir, "testbed.pid") }

// runForeground starts the test bed and keeps it until SIGINT or SIGTERM.
func runForeground(demo bool) error {
	cfg, err := config()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return err
	}
	if pid, alive := running(cfg); alive {
		return fmt.Errorf("a test bed is already running (pid %d); run `make testbed-down` first", pid)
	}
	if err := os.WriteFile(pidFile(cfg), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile(cfg))

	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	t0 := time.Now()
	tb, err := testbed.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer tb.Stop()
	fmt.Printf("testbed: up in %.1fs\n", time.Since(t0).Seconds())
	fmt.Printf("  kubeconfig:  %s   (export KUBECONFIG=%s)\n", tb.Kubeconfig, tb.Kubeconfig)
	fmt.Printf("               %s   (for splitter: user %s)\n", tb.ControllerKubeconfig, testbed.ControllerUser)
	fmt.Printf("  prometheus:  %s   (also in %s), scraping every %s\n", tb.PrometheusURL, filepath.Join(tb.StateDir(), "prometheus-url"), tb.ScrapeInterval())
	fmt.Printf("  meshsim:     %s/metrics\n", tb.MeshSimURL)
	fmt.Printf("  logs:        %s\n", filepath.Join(tb.StateDir(), "logs"))
	if tb.AuditLog() != "" {
		fmt.Printf("  audit log:   %s   (writes to VirtualServices, DestinationRules, Services, Deployments, Splits)\n", tb.AuditLog())
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "ready"), nil, 0o644); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(cfg.StateDir, "ready"))

	if demo {
		return runDemo(ctx, tb)
	}
	<-ctx.Done()
	fmt.Println("testbed: stopping")
	return nil
}

// upDetached starts `testbed up` as a background process in its own session
// and returns once it is ready (or has failed).
func upDetached() error {
	cfg, err := config()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return err
	}
	if pid, alive := running(cfg); alive {
		return fmt.Errorf("a test bed is already running (pid %d)", pid)
	}
	_ = os.Remove(filepath.Join(cfg.StateDir, "ready"))
	logPath := filepath.Join(cfg.StateDir, "testbed.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "up")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(3 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(cfg.StateDir, "ready")); err == nil {
			out, _ := os.ReadFile(logPath)
			fmt.Print(string(out))
			fmt.Printf("testbed: running in the background (pid %d); `make testbed-down` stops it\n", cmd.Process.Pid)
			return nil
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("test bed failed to start (%v):\n%s", err, out)
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return errors.New("test bed not ready after 3 minutes; see " + logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// down stops a detached test bed and waits for it to exit.
func down() error {
	cfg, err := config()
	if err != nil {
		return err
	}
	pid, alive := running(cfg)
	if !alive {
		fmt.Println("testbed: not running")
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	for i := 0; i < 300; i++ {
		if syscall.Kill(pid, 0) != nil {
			fmt.Printf("testbed: stopped (pid %d)\n", pid)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL) // its children die with it (Pdeathsig)
	return fmt.Errorf("pid %d did not stop within 30s; killed", pid)
}

// running reads the pid file and checks the process is a live testbed.
func running(cfg testbed.Config) (int, bool) {
	b, err := os.ReadFile(pidFile(cfg))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0, false
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return pid, strings.Contains(string(cmdline), "testbed")
}
