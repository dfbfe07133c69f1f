package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"splitter.dev/splitter/test/testbed"
)

// The test bed's own restarts work: kube-apiserver and Prometheus come
// back on the same ports, and Prometheus scrapes the simulator again (the
// chaos run depends on both). Prometheus stopped cleanly keeps its
// samples; killed, it loses what its write-ahead log had not written out
// yet (up to a 32 KiB page: the first seconds of a new one), as a real
// Prometheus that crashes does.
func TestTestBedRestarts(t *testing.T) {
	tb := testbed.Shared(t)
	for _, r := range []struct {
		name       string
		kill, keep bool
	}{{"prometheus", false, true}, {"kube-apiserver", true, true}, {"prometheus", true, false}} {
		name := r.name
		time.Sleep(5 * time.Second) // a few scrapes to keep
		before := time.Now()
		if err := tb.Restart(context.Background(), name, r.kill); err != nil {
			t.Fatalf("restarting %s: %v", name, err)
		}
		testbed.Eventually(t, time.Minute, 500*time.Millisecond, "the simulator scraped after "+name+" restarted", func(ctx context.Context) error {
			up, at, err := lastUp(ctx, tb.PrometheusURL)
			if err != nil {
				return err
			}
			if up != "1" || at.Before(before) {
				return fmt.Errorf("up %s at %s", up, at.Format(time.RFC3339Nano))
			}
			return nil
		})
		// Samples from before the restart are still there.
		if n, err := countAt(tb.PrometheusURL, before.Add(-3*time.Second)); r.keep && (err != nil || n == 0) {
			t.Errorf("after %s restarted, Prometheus has %d series from before it (%v)", name, n, err)
		}
	}
}

func lastUp(ctx context.Context, base string) (string, time.Time, error) {
	var out struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(`up{job="meshsim"}`), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", time.Time{}, err
	}
	if len(out.Data.Result) == 0 {
		return "", time.Time{}, fmt.Errorf("no up series")
	}
	v := out.Data.Result[0].Value
	ts, _ := v[0].(float64)
	s, _ := v[1].(string)
	return s, time.Unix(0, int64(ts*1e9)), nil
}

func countAt(base string, at time.Time) (int, error) {
	var out struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(`up`) + fmt.Sprintf("&time=%d", at.Unix()))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&out)
	return len(out.Data.Result), err
}
