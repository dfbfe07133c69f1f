package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
	"splitter.dev/splitter/internal/dashboard"
)

// DecideVerb says whether the verb of that name would act on s now: ""
// if so, else its refusal (the dashboard's buttons). Retry is not held to
// the Deployment's template here; the action is.
func DecideVerb(s *splitterv1.Split, verb string) string {
	var err error
	switch verb {
	case "approve":
		_, err = Approve(s, "", "")
	case "abort":
		_, err = Abort(s, "")
	case "pause":
		_, err = Pause(s, "")
	case "resume":
		_, err = Resume(s, "")
	case "retry":
		_, err = Retry(s, "", "")
	default:
		return "unknown action " + verb
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// dashboardAct is one button: the verb's own decision and write (the
// same as `kubectl splitter VERB`), as the user, pinned to what the page
// showed.
func (k *kube) dashboardAct(ctx context.Context, namespace, name, verb, expect string) (string, error) {
	s := &splitterv1.Split{}
	if err := k.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s); err != nil {
		return "", fmt.Errorf("reading Split %s/%s: %w", namespace, name, err)
	}
	by := k.whoami(ctx)
	template := ""
	if verb == "retry" {
		t, err := k.templateRevision(ctx, s)
		if err != nil {
			return "", err
		}
		template = t
	}
	decide := func() (Change, error) {
		var ch Change
		var err error
		switch verb {
		case "approve":
			ch, err = Approve(s, expect, by)
		case "abort":
			ch, err = Abort(s, by)
		case "pause":
			ch, err = Pause(s, by)
		case "resume":
			ch, err = Resume(s, by)
		case "retry":
			ch, err = Retry(s, template, by)
		default:
			return ch, refuse("unknown action %s", verb)
		}
		if err == nil && expect != "" && ch.Target != expect {
			return ch, refuse("%s moved on since the page showed it (%s, now %s): refusing to %s; look again", name, expect, ch.Target, verb)
		}
		return ch, err
	}
	ch, err := PatchFresh(ctx, k.c, s, decide)
	var r *Refusal
	if errors.As(err, &r) {
		return "", &dashboard.Refused{Reason: r.Reason}
	}
	if err != nil {
		return "", err
	}
	if ch.Noop {
		return fmt.Sprintf("Already asked (%s); the controller acts on it at its next look.", ch.Target), nil
	}
	return fmt.Sprintf("Split %s/%s: %s%s.", namespace, name, ch.Done, requested(by)), nil
}

// scrapeInterval is Prometheus' global scrape_interval, from its
// configuration (15s if it cannot be read).
func scrapeInterval(ctx context.Context, api promv1.API) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cfg, err := api.Config(ctx)
	if err != nil {
		return 15 * time.Second
	}
	var c struct {
		Global struct {
			ScrapeInterval string `json:"scrape_interval"`
		} `json:"global"`
	}
	if yaml.Unmarshal([]byte(cfg.YAML), &c) != nil {
		return 15 * time.Second
	}
	if d, err := time.ParseDuration(c.Global.ScrapeInterval); err == nil && d > 0 {
		return d
	}
	return 15 * time.Second
}

func openBrowser(url string) error {
	name := "xdg-open"
	if runtime.GOOS == "darwin" {
		name = "open"
	}
	cmd := exec.Command(name, url)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reap it; its outcome is the browser's business
	return nil
}

func (c *cli) dashboard() *cobra.Command {
	var port int
	var address, promURL string
	var all, open bool
	var scrape time.Duration
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "A live web page of the releases, on this machine (127.0.0.1), as you",
		Long: `Serve a web page on 127.0.0.1 that shows every Split you can read, live from a
watch: phase, weights, verdicts, the gate waiting, recent rollbacks first; and
for one release a timeline of green's weight and both colours' error rate and
p99 latency (with --prometheus-url), with a marker at each step, verdict, pause
and snap-back, and the approve/abort/pause/resume/retry buttons.

It uses your kubeconfig: what you see and do is what your RBAC allows. It
answers only to its own address (Host and Origin checked), and the buttons need
the session's token. The URL it prints carries that token: opening it
moves the token into an HttpOnly, SameSite=Strict cookie that every
request needs, so neither another web page nor another program or user
on this machine can read or act without that URL.`,
		Example: `  kubectl splitter dashboard -n shop
  kubectl splitter dashboard -A --prometheus-url http://localhost:9090 --port 8300`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ip := net.ParseIP(address)
			if address == "localhost" {
				ip = net.IPv4(127, 0, 0, 1)
			}
			if ip == nil || !ip.IsLoopback() {
				return usageError{fmt.Errorf("--address %q: the dashboard listens on a loopback address only (127.0.0.1)", address)}
			}
			if port < 0 || port > 65535 {
				return usageError{fmt.Errorf("--port %d: want 0 (any free port) to 65535", port)}
			}
			k, err := c.connect()
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			opts := dashboard.Options{Client: k.c, Namespace: k.ns, Decide: DecideVerb, Act: k.dashboardAct, Scrape: scrape, Log: logr.Discard()}
			if all {
				opts.Namespace = ""
			}
			if promURL != "" {
				pc, err := promapi.NewClient(promapi.Config{Address: promURL})
				if err != nil {
					return usageError{fmt.Errorf("--prometheus-url: %w", err)}
				}
				opts.Prometheus = promv1.NewAPI(pc)
				if scrape <= 0 {
					opts.Scrape = scrapeInterval(ctx, opts.Prometheus)
				}
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
			if err != nil {
				return fmt.Errorf("listening on %s port %d: %w", ip, port, err)
			}
			srv, err := dashboard.New(opts, ln.Addr().String())
			if err != nil {
				ln.Close()
				return err
			}
			url := srv.EntryURL(ln.Addr().String())
			scope := "namespace " + opts.Namespace
			if opts.Namespace == "" {
				scope = "every namespace"
			}
			fmt.Fprintf(c.env.Out, "Dashboard of %s at %s (Ctrl-C to stop)\n", scope, url)
			if open {
				if err := openBrowser(url); err != nil {
					fmt.Fprintf(c.env.ErrOut, "Could not open a browser (%v): open %s yourself\n", err, url)
				}
			}
			return srv.Serve(ctx, ln)
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "Port to listen on; 0 picks a free one")
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "Address to listen on: a loopback address only")
	cmd.Flags().StringVar(&promURL, "prometheus-url", "", "Prometheus for the timeline's error rates and latency (e.g. http://localhost:9090)")
	cmd.Flags().DurationVar(&scrape, "scrape-interval", 0, "Prometheus' scrape interval, for the rate windows; 0 reads it from Prometheus")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "Show the Splits of every namespace you can read")
	cmd.Flags().BoolVar(&open, "open-browser", true, "Open the page in a browser")
	return cmd
}
