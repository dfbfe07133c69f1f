package testbed

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// RequireEnv is set by `make test`: without it, tests that need the test
// bed skip when the tools are missing; with it, they fail.
const RequireEnv = "SPLITTER_REQUIRE_TOOLS"

var shared *TestBed

// RunShared is a TestMain body: it starts one test bed for the package's
// tests, runs them and tears the bed down, also on SIGINT/SIGTERM. Tests
// reach the bed through Shared.
func RunShared(m *testing.M) int { return RunSharedWith(m, nil) }

// RunSharedWith is RunShared with the configuration changed by edit.
func RunSharedWith(m *testing.M, edit func(*Config)) int {
	ctrllog.SetLogger(logr.Discard()) // the clients' own logs are noise in test output
	cfg, err := ConfigFromEnv()
	if err == nil && edit != nil {
		edit(&cfg)
	}
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "skipping the test bed: %v\n", err)
		return m.Run()
	}
	cfg.StateDir = "" // a fresh temporary directory per test binary
	cfg.Progress = os.Stderr
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	tb, err := Start(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the test bed:", err)
		return 1
	}
	shared = tb
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		tb.Stop()
		os.Exit(1)
	}()
	code := m.Run()
	tb.Stop()
	if code == 0 {
		_ = os.RemoveAll(tb.StateDir())
	} else {
		fmt.Fprintf(os.Stderr, "test bed logs kept in %s\n", tb.StateDir())
	}
	return code
}

// Shared returns the package's test bed, skipping the test when there is none.
func Shared(t testing.TB) *TestBed {
	t.Helper()
	if shared == nil {
		t.Skip("no test bed: run through `make test`")
	}
	return shared
}

// Namespace creates a namespace for one test and deletes it afterwards.
func (tb *TestBed) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := tb.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() { _ = tb.Client.Delete(context.Background(), ns) })
	return ns.Name
}

// Eventually polls f every interval until it returns nil or timeout passes,
// then fails the test with f's last error.
func Eventually(t testing.TB, timeout, interval time.Duration, what string, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if last = f(ctx); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %v", what, timeout, last)
		case <-time.After(interval):
		}
	}
}

// Create creates obj or fails the test.
func (tb *TestBed) Create(t testing.TB, obj client.Object) {
	t.Helper()
	if err := tb.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// StartOwn starts a test bed of a test's own, from cfg (in a fresh
// temporary directory, quietly), and tears it down when the test and its
// subtests end, keeping its logs when they failed. what names it in the
// message that says where those are.
func StartOwn(t testing.TB, cfg Config, what string) *TestBed {
	t.Helper()
	cfg.StateDir, cfg.Progress = "", nil
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	tb, err := Start(ctx, cfg)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tb.Stop()
		if !t.Failed() {
			_ = os.RemoveAll(tb.StateDir())
		} else {
			t.Logf("the %s's logs are in %s", what, tb.StateDir())
		}
	})
	return tb
}
