package dashboard

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/test/testbed"
)

// The page in a real browser (headless Chromium) over a fake API server:
// it renders, follows the watch, draws the snap-back and posts actions
// with the token. The test bed's version is test/e2e/dashboard_test.go.

func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(testbed.Chromium(t)), chromedp.NoSandbox, chromedp.WindowSize(1200, 800))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	// The first run starts the browser, on a context without a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// within runs steps with a deadline.
func within(ctx context.Context, d time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return chromedp.Do(c, steps...)
}

func get[T any](ctx context.Context, a chromedp.Action[T]) (T, error) {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(c, a)
}

// shot keeps a screenshot when the test fails.
func shot(t *testing.T, ctx context.Context) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		png, err := get(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			return
		}
		dir := os.Getenv("DASHBOARD_ARTIFACTS")
		if dir == "" {
			dir = os.TempDir()
		}
		p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".png")
		if os.WriteFile(p, png, 0o644) == nil {
			t.Logf("screenshot: %s", p)
		}
	})
}

func TestPageInBrowser(t *testing.T) {
	ctx := browser(t)
	b := newBed(t, "", split("b", "app", shifting()), split("c", "bad", rolledBack(-time.Minute)))
	shot(t, ctx)
	if err := within(ctx, 20*time.Second, chromedp.Navigate(b.url+"/?token="+b.srv.Token()), chromedp.WaitVisible(chromedp.CSS(`tr[data-split="b/app"]`))); err != nil {
		t.Fatal(err)
	}
	text, err := get(ctx, chromedp.Text(chromedp.CSS(`#splits`)))
	if err != nil || !strings.Contains(text, "Shifting") || !strings.Contains(text, "green 25%") || !strings.Contains(text, "WatchdogTripped") {
		t.Errorf("overview says (%v):\n%s", err, text)
	}
	first, err := get(ctx, chromedp.AttributeValue(chromedp.CSS(`#splits tr:first-child`), "data-split"))
	if err != nil || first.Value != "c/bad" {
		t.Errorf("first row %q (%v), want the rollback", first.Value, err)
	}

	// A change on the API server reaches the page.
	s := &splitterv1.Split{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: "b", Name: "app"}, s); err != nil {
		t.Fatal(err)
	}
	s.Status.Weight, s.Status.Step = 50, 3
	if err := b.c.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := within(ctx, 10*time.Second, chromedp.WaitVisible(chromedp.CSS(`tr[data-split="b/app"] .weight[data-green="50"]`))); err != nil {
		t.Fatalf("the weight did not follow: %v", err)
	}

	// The rolled-back release: its snap-back marker.
	if err := within(ctx, 20*time.Second, chromedp.Navigate(b.url+"/#/c/bad"), chromedp.WaitVisible(chromedp.CSS(`#r-markers li[data-kind="snapback"]`))); err != nil {
		t.Fatalf("no snap-back marker: %v", err)
	}
	if text, err := get(ctx, chromedp.Text(chromedp.CSS(`#r-history`))); err != nil || !strings.Contains(text, "RolledBack") {
		t.Errorf("history says %q (%v)", text, err)
	}
	disabled, err := get(ctx, chromedp.Evaluate[bool](`document.querySelector('button[data-verb="abort"]').disabled`))
	if err != nil || !disabled {
		t.Errorf("abort on a rolled-back release: disabled=%v (%v)", disabled, err)
	}

	// A button posts its verb with the token.
	if err := within(ctx, 20*time.Second, chromedp.Navigate(b.url+"/#/b/app"),
		chromedp.WaitEnabled(chromedp.CSS(`button[data-verb="pause"]`)),
		chromedp.Click(chromedp.CSS(`button[data-verb="pause"]`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("r-result").textContent.includes("pause done")`, chromedp.WithPollingTimeout(10*time.Second)),
	); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if a := <-b.acted; a != (acted{"b", "app", "pause"}) {
		t.Errorf("acted %+v", a)
	}
	// For a look: the pages as drawn, when DASHBOARD_ARTIFACTS names a directory.
	if dir := os.Getenv("DASHBOARD_ARTIFACTS"); dir != "" {
		for name, url := range map[string]string{"release": b.url + "/#/c/bad", "overview": b.url + "/"} {
			if err := within(ctx, 10*time.Second, chromedp.Navigate(url), chromedp.Sleep(500*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			if png, err := get(ctx, chromedp.FullScreenshot(100)); err == nil {
				_ = os.WriteFile(filepath.Join(dir, "page-"+name+".png"), png, 0o644)
			}
		}
	}
}
