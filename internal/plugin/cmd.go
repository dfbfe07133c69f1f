// Package plugin is `kubectl splitter`: watch, explain and act on releases
// from the terminal. Every verb that changes something is one merge patch
// of annotations the controller already honours, with a resourceVersion
// precondition and splitter.dev/requested-by; renderers are pure functions
// of a Split, a width, a colour switch and "now".
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	splitterv1 "splitter.dev/splitter/api/v1alpha1"
)

// Exit codes, as kubectl's.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// usageError is a command line that cannot be run (exit 2).
type usageError struct{ error }

// exitCode ends the command with a code and no further message (the
// outcome of `get --watch` was already printed).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// Env is what the commands take from the process: streams, whether
// stdout is a terminal and its width, NO_COLOR, the clock.
type Env struct {
	genericiooptions.IOStreams
	TTY     bool
	Width   int
	NoColor bool
	Now     func() time.Time
}

// ProcessEnv reads the real process's streams and terminal.
func ProcessEnv() Env {
	e := Env{IOStreams: genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, Width: 80, Now: time.Now}
	e.NoColor = os.Getenv("NO_COLOR") != ""
	if term.IsTerminal(int(os.Stdout.Fd())) {
		e.TTY = true
		if w, _, err := term.GetSize(int(os.Stdout.Fd())); err == nil && w > 0 {
			e.Width = w
		}
	}
	return e
}

func (e Env) view() View {
	return View{Now: e.Now(), Width: e.Width, Color: e.TTY && !e.NoColor}
}

// Main runs `kubectl splitter args...` and returns the exit code.
func Main(args []string, env Env) int {
	root := NewCommand(env)
	root.SetArgs(args)
	err := root.Execute()
	var code exitCode
	var usage usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &usage) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") || strings.Contains(err.Error(), "accepts "):
		fmt.Fprintf(env.ErrOut, "error: %v\nSee 'kubectl splitter --help'.\n", err)
		return ExitUsage
	}
	fmt.Fprintf(env.ErrOut, "error: %v\n", err)
	return ExitError
}

// NewCommand builds the command tree.
func NewCommand(env Env) *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:   "kubectl-splitter",
		Short: "Watch, explain and operate splitter releases",
		Long: `kubectl splitter watches, explains and operates the releases of Deployments
opted in to splitter (blue-green + canary on Istio). Every change it makes is an
annotation on the Split the controller acts on, recorded in status.actions and
an Event with who asked.`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl splitter"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(env.In)
	root.SetOut(env.Out)
	root.SetErr(env.ErrOut)
	flags.AddFlags(root.PersistentFlags())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.HiddenDefaultCmd = false

	c := &cli{env: env, flags: flags}
	root.AddCommand(c.get(), c.list(), c.history(), c.explain(),
		c.approve(), c.act("abort", "Snap the release in progress back to the live colour", Abort),
		c.act("pause", "Hold the release in progress at its weights (the watchdog keeps watching)", Pause),
		c.act("resume", "Go on with a paused release", Resume),
		c.retry(), c.promote(), c.optIn(), c.optOut(), c.version(), c.dashboard())
	return root
}

type cli struct {
	env   Env
	flags *genericclioptions.ConfigFlags
}

func (c *cli) connect() (*kube, error) { return connect(c.flags) }

// withSplit connects, reads the Split and runs do with it, until Ctrl-C.
func (c *cli) withSplit(name string, do func(ctx context.Context, k *kube, s *splitterv1.Split) error) error {
	k, err := c.connect()
	if err != nil {
		return err
	}
	ctx, cancel := ctx()
	defer cancel()
	s, err := k.split(ctx, name)
	if err != nil {
		return err
	}
	return do(ctx, k, s)
}

// ctx ends on Ctrl-C.
func ctx() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func exactlyOne(what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageError{fmt.Errorf("name one %s (got %d arguments)", what, len(args))}
		}
		return nil
	}
}

// completeSplits completes Split names in the namespace the flags name.
func (c *cli) completeSplits(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	k, err := c.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var l splitterv1.SplitList
	if err := k.c.List(ctx, &l, client.InNamespace(k.ns)); err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, s := range l.Items {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s.Name+"\t"+string(s.Status.Phase))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeNames completes the names of a list kind in the namespace.
func (c *cli) completeNames(list func() client.ObjectList, names func(client.ObjectList) []string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		k, err := c.connect()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l := list()
		if err := k.c.List(ctx, l, client.InNamespace(k.ns)); err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var out []string
		for _, n := range names(l) {
			if strings.HasPrefix(n, prefix) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// printData prints an object as -o json or yaml.
func printData(w io.Writer, format string, obj any) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(obj, "", "    ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return usageError{fmt.Errorf("unknown output format %q: want json or yaml", format)}
}

func checkOutput(o string) error {
	if o != "" && o != "json" && o != "yaml" {
		return usageError{fmt.Errorf("unknown output format %q: want json or yaml", o)}
	}
	return nil
}

func withKind(s *splitterv1.Split) *splitterv1.Split {
	s = s.DeepCopy()
	s.APIVersion, s.Kind = splitterv1.GroupVersion.String(), "Split"
	return s
}

func (c *cli) get() *cobra.Command {
	var output string
	var watchIt, all bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "Show a Split: colours, weights, step, time left, checks, the gate it waits at",
		Long: `Show a Split. Without NAME, list the Splits (as 'list').

With --watch, redraw on every change until the release ends: exit 0 when it
is promoted, 1 when it is rolled back, aborted or superseded. Run right after
'kubectl set image', it waits for the release that change starts.`,
		Example: `  kubectl splitter get checkout
  kubectl set image deployment/checkout app=shop/checkout:2.4 && kubectl splitter get checkout --watch`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError{fmt.Errorf("name at most one Split")}
			}
			if watchIt && len(args) == 0 {
				return usageError{fmt.Errorf("--watch needs a Split's name")}
			}
			if watchIt && output != "" {
				return usageError{fmt.Errorf("--watch draws the Split; -o is for one look")}
			}
			if all && len(args) > 0 {
				return usageError{fmt.Errorf("-A lists the Splits of every namespace: name no Split")}
			}
			return checkOutput(output)
		},
		ValidArgsFunction: c.completeSplits,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return c.listIn(output, all)
			}
			k, err := c.connect()
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			if watchIt {
				if timeout > 0 {
					var cancelT context.CancelFunc
					ctx, cancelT = context.WithTimeout(ctx, timeout)
					defer cancelT()
				}
				return c.watch(ctx, k, args[0])
			}
			s, err := k.split(ctx, args[0])
			if err != nil {
				return err
			}
			if output != "" {
				return printData(c.env.Out, output, withKind(s))
			}
			_, err = io.WriteString(c.env.Out, RenderSplit(s, c.env.view()))
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format: json or yaml")
	cmd.Flags().BoolVarP(&watchIt, "watch", "w", false, "Watch the release until it ends; exit 0 if promoted, 1 if not")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "Without NAME, list the Splits of every namespace")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "With --watch, give up (exit 1) after this long; 0 waits as long as it takes")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (c *cli) list() *cobra.Command {
	var output string
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the Splits of a namespace (-A: of all namespaces)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("list takes no arguments")}
			}
			return checkOutput(output)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.listIn(output, all)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format: json or yaml")
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "List the Splits of every namespace")
	return cmd
}

func (c *cli) runList(output string) error    { return c.listIn(output, false) }
func (c *cli) runListAll(output string) error { return c.listIn(output, true) }

func (c *cli) listIn(output string, all bool) error {
	k, err := c.connect()
	if err != nil {
		return err
	}
	ctx, cancel := ctx()
	defer cancel()
	var l splitterv1.SplitList
	var opts []client.ListOption
	if !all {
		opts = append(opts, client.InNamespace(k.ns))
	}
	if err := k.c.List(ctx, &l, opts...); err != nil {
		return fmt.Errorf("listing Splits: %w", err)
	}
	if output != "" {
		l.APIVersion, l.Kind = splitterv1.GroupVersion.String(), "SplitList"
		for i := range l.Items {
			l.Items[i] = *withKind(&l.Items[i])
		}
		return printData(c.env.Out, output, &l)
	}
	if len(l.Items) == 0 && !all {
		_, err := fmt.Fprintf(c.env.ErrOut, "No Splits found in namespace %s.\n", k.ns)
		return err
	}
	_, err = io.WriteString(c.env.Out, RenderList(l.Items, all, c.env.view()))
	return err
}

func (c *cli) history() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "The releases in status: revision, outcome, reason, step, failing check, duration",
		Args: func(cmd *cobra.Command, args []string) error {
			return errors.Join(exactlyOne("Split")(cmd, args), checkOutput(output))
		},
		ValidArgsFunction: c.completeSplits,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSplit(args[0], func(ctx context.Context, k *kube, s *splitterv1.Split) error {
				if output != "" {
					h := s.Status.History
					if h == nil {
						h = []splitterv1.Release{}
					}
					return printData(c.env.Out, output, h)
				}
				_, err := io.WriteString(c.env.Out, RenderHistory(s, c.env.view()))
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format: json or yaml")
	return cmd
}

func (c *cli) explain() *cobra.Command {
	return &cobra.Command{
		Use:               "explain NAME",
		Short:             "Why the last decision was taken, in sentences, with the numbers",
		Args:              exactlyOne("Split"),
		ValidArgsFunction: c.completeSplits,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSplit(args[0], func(ctx context.Context, k *kube, s *splitterv1.Split) error {
				_, err := io.WriteString(c.env.Out, Explain(s, c.env.view()))
				return err
			})
		},
	}
}

// change runs one verb on a Split: read, decide, one patch.
func (c *cli) change(name string, decide func(s *splitterv1.Split, by string) (Change, error)) error {
	return c.withSplit(name, func(ctx context.Context, k *kube, s *splitterv1.Split) error {
		by := k.whoami(ctx)
		ch, err := k.patchFresh(ctx, s, func() (Change, error) { return decide(s, by) })
		if err != nil {
			return err
		}
		if ch.Noop {
			_, err = fmt.Fprintf(c.env.Out, "Already asked (%s); the controller acts on it at its next look.\n", ch.Target)
			return err
		}
		_, err = fmt.Fprintf(c.env.Out, "Split %s/%s: %s%s.\n", s.Namespace, s.Name, ch.Done, requested(by))
		return err
	})
}

func requested(by string) string {
	if by == "" {
		return ""
	}
	return " (requested by " + by + ")"
}

func (c *cli) act(verb, short string, decide func(*splitterv1.Split, string) (Change, error)) *cobra.Command {
	return &cobra.Command{
		Use:               verb + " NAME",
		Short:             short,
		Args:              exactlyOne("Split"),
		ValidArgsFunction: c.completeSplits,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.change(args[0], decide)
		},
	}
}

func (c *cli) approve() *cobra.Command {
	var gate string
	cmd := &cobra.Command{
		Use:   "approve NAME",
		Short: "Approve the gate the release waits at now (status.gate)",
		Long: `Approve the gate the release waits at now. It refuses, with the reason, when
nothing waits; with --gate, it refuses unless the release waits at that gate (a
gate that has passed is never approved by mistake).`,
		Args:              exactlyOne("Split"),
		ValidArgsFunction: c.completeSplits,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.change(args[0], func(s *splitterv1.Split, by string) (Change, error) { return Approve(s, gate, by) })
		},
	}
	cmd.Flags().StringVar(&gate, "gate", "", "The gate expected (e.g. 5d8f9c7b/3/promotion): refuse if the release waits elsewhere")
	return cmd
}

func (c *cli) retry() *cobra.Command {
	return &cobra.Command{
		Use:               "retry NAME",
		Short:             "Release again the revision that was rolled back",
		Args:              exactlyOne("Split"),
		ValidArgsFunction: c.completeSplits,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSplit(args[0], func(ctx context.Context, k *kube, s *splitterv1.Split) error {
				template, err := k.templateRevision(ctx, s)
				if err != nil {
					return err
				}
				return c.change(args[0], func(s *splitterv1.Split, by string) (Change, error) { return Retry(s, template, by) })
			})
		},
	}
}

func (c *cli) promote() *cobra.Command {
	var skip, yes bool
	cmd := &cobra.Command{
		Use:   "promote NAME --skip-steps",
		Short: "Emergency: give the candidate 100% now, skipping the remaining steps",
		Long: `Give the candidate 100% of the traffic now, skipping the remaining steps,
approvals and pre-promotion hooks. The previous live colour stays up for the
standby period, still watched. Asks for confirmation on a terminal; --yes for scripts.`,
		Args:              exactlyOne("Split"),
		ValidArgsFunction: c.completeSplits,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !skip {
				return usageError{fmt.Errorf("promote skips the remaining steps: say so with --skip-steps")}
			}
			return c.change(args[0], func(s *splitterv1.Split, by string) (Change, error) {
				ch, err := Promote(s, by)
				if err != nil || ch.Noop || yes {
					return ch, err
				}
				if !c.env.TTY {
					return ch, &Refusal{Reason: "promote asks for confirmation: not a terminal, pass --yes"}
				}
				fmt.Fprintf(c.env.Out, "Promote revision %s of %s to 100%% now, skipping %s? [y/N] ", s.Status.CandidateRevision, s.Name, remaining(s))
				var answer string
				_, _ = fmt.Fscanln(c.env.In, &answer)
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return ch, &Refusal{Reason: "not promoted"}
				}
				yes = true // a re-decision after a conflict does not ask twice
				return ch, nil
			})
		},
	}
	cmd.Flags().BoolVar(&skip, "skip-steps", false, "Skip the remaining steps (required)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not ask for confirmation")
	return cmd
}

func remaining(s *splitterv1.Split) string {
	p := planFor(s.Status.Policy)
	n := len(p.steps) - int(s.Status.Step)
	return fmt.Sprintf("%d remaining step(s) at %d%% now", n, s.Status.Weight)
}

func (c *cli) optIn() *cobra.Command {
	var pol string
	cmd := &cobra.Command{
		Use:   "opt-in DEPLOYMENT --policy P",
		Short: "Hand a Deployment's releases to splitter (annotate it with splitter.dev/policy)",
		Args:  exactlyOne("Deployment"),
		ValidArgsFunction: c.completeNames(func() client.ObjectList { return &appsv1.DeploymentList{} }, func(l client.ObjectList) []string {
			var out []string
			for _, d := range l.(*appsv1.DeploymentList).Items {
				if !strings.HasSuffix(d.Name, "-blue") && !strings.HasSuffix(d.Name, "-green") {
					out = append(out, d.Name)
				}
			}
			return out
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pol == "" {
				return usageError{fmt.Errorf("name the SplitPolicy with --policy")}
			}
			k, err := c.connect()
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			d := &appsv1.Deployment{}
			if err := k.c.Get(ctx, k.key(args[0]), d); err != nil {
				return fmt.Errorf("reading Deployment %s/%s: %w", k.ns, args[0], err)
			}
			var policyErr error
			if err := k.c.Get(ctx, k.key(pol), &splitterv1.SplitPolicy{}); apierrors.IsNotFound(err) {
				policyErr = fmt.Errorf("there is no SplitPolicy %s in namespace %s", pol, k.ns)
			} else if err != nil {
				policyErr = fmt.Errorf("cannot read SplitPolicy %s/%s: %w", k.ns, pol, err)
			}
			if policyErr != nil {
				fmt.Fprintf(c.env.ErrOut, "Warning: %v\n", policyErr)
			}
			by := k.whoami(ctx)
			ch, err := k.patchFresh(ctx, d, func() (Change, error) {
				ch := Change{Verb: "opt-in", Target: d.Annotations[splitterv1.PolicyAnnotation], Set: map[string]*string{splitterv1.PolicyAnnotation: str(pol)}}
				if by != "" {
					ch.Set[splitterv1.RequestedByAnnotation] = str(by)
				}
				ch.Noop = d.Annotations[splitterv1.PolicyAnnotation] == pol
				return ch, nil
			})
			if err != nil {
				return err
			}
			if ch.Noop {
				_, err := fmt.Fprintf(c.env.Out, "Deployment %s/%s is already opted in with SplitPolicy %s.\n", d.Namespace, d.Name, pol)
				return err
			}
			fmt.Fprintf(c.env.Out, "Deployment %s/%s opted in with SplitPolicy %s%s. What happens now:\n", d.Namespace, d.Name, pol, requested(by))
			for _, l := range OptInPlan(d, pol, policyErr) {
				for _, w := range wrap(l, c.env.Width, "  - ", "    ") {
					fmt.Fprintln(c.env.Out, w)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pol, "policy", "", "The SplitPolicy (same namespace) the releases follow")
	_ = cmd.RegisterFlagCompletionFunc("policy", c.completeNames(func() client.ObjectList { return &splitterv1.SplitPolicyList{} }, func(l client.ObjectList) []string {
		var out []string
		for _, p := range l.(*splitterv1.SplitPolicyList).Items {
			out = append(out, p.Name)
		}
		return out
	}))
	return cmd
}

func (c *cli) optOut() *cobra.Command {
	return &cobra.Command{
		Use:               "opt-out DEPLOYMENT",
		Short:             "Take a Deployment back from splitter (remove splitter.dev/policy)",
		Args:              exactlyOne("Deployment"),
		ValidArgsFunction: c.completeSplits,
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := c.connect()
			if err != nil {
				return err
			}
			ctx, cancel := ctx()
			defer cancel()
			d := &appsv1.Deployment{}
			if err := k.c.Get(ctx, k.key(args[0]), d); err != nil {
				return fmt.Errorf("reading Deployment %s/%s: %w", k.ns, args[0], err)
			}
			if d.Annotations[splitterv1.PolicyAnnotation] == "" {
				return &Refusal{Reason: fmt.Sprintf("Deployment %s/%s is not opted in (no %s annotation)", d.Namespace, d.Name, splitterv1.PolicyAnnotation)}
			}
			var split *splitterv1.Split
			if s, err := k.split(ctx, args[0]); err == nil {
				split = s
			}
			by := k.whoami(ctx)
			if _, err := k.patchFresh(ctx, d, func() (Change, error) {
				if d.Annotations[splitterv1.PolicyAnnotation] == "" {
					return Change{}, &Refusal{Reason: fmt.Sprintf("Deployment %s/%s was opted out meanwhile", d.Namespace, d.Name)}
				}
				ch := Change{Verb: "opt-out", Set: map[string]*string{splitterv1.PolicyAnnotation: nil}}
				if by != "" {
					ch.Set[splitterv1.RequestedByAnnotation] = str(by)
				}
				return ch, nil
			}); err != nil {
				return err
			}
			fmt.Fprintf(c.env.Out, "Deployment %s/%s opted out%s. What happens now:\n", d.Namespace, d.Name, requested(by))
			for _, l := range OptOutPlan(d, split) {
				for _, w := range wrap(l, c.env.Width, "  - ", "    ") {
					fmt.Fprintln(c.env.Out, w)
				}
			}
			return nil
		},
	}
}

// Version is stamped by cmd/splitter.
var Version = "dev"

func (c *cli) version() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintln(c.env.Out, "kubectl-splitter", Version)
			return err
		},
	}
}

// watch follows one Split through a watch on it (no polling) until the
// release waited for ends.
func (c *cli) watch(ctx context.Context, k *kube, name string) error {
	s, err := k.split(ctx, name)
	if err != nil {
		return err
	}
	template, err := k.templateRevision(ctx, s)
	if err != nil {
		fmt.Fprintf(c.env.ErrOut, "Warning: %v; waiting for the release in progress\n", err)
	}
	w := NewWaiter(s, template)
	last := ""
	show := func() {
		v := c.env.view()
		if c.env.TTY {
			// Redraw in place: home, clear, the Split.
			fmt.Fprint(c.env.Out, "\x1b[H\x1b[2J"+RenderSplit(s, v))
			if w.Revision != "" && s.Status.CandidateRevision != w.Revision && s.Status.LiveRevision != w.Revision {
				fmt.Fprintf(c.env.Out, "\nWaiting for the release of revision %s to start.\n", w.Revision)
			}
			return
		}
		line := WatchLine(s, v.Now)
		if key := line[9:]; key != last { // without the time
			last = key
			fmt.Fprintln(c.env.Out, line)
		}
	}
	end := func(code int, summary string) error {
		fmt.Fprintln(c.env.Out, summary)
		return exitCode(code)
	}
	if !c.env.TTY && w.Revision != "" {
		fmt.Fprintf(c.env.Out, "Waiting for the release of revision %s (the template of Deployment %s) to end\n", w.Revision, s.Spec.Workload)
	}
	show()
	if done, code, summary := w.Outcome(s); done {
		return end(code, summary)
	}
	// The countdown moves on a terminal between events: a local redraw of
	// the last object read (no request).
	var tick <-chan time.Time
	if c.env.TTY {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	rv := s.ResourceVersion
	for {
		wi, err := k.c.Watch(ctx, &splitterv1.SplitList{}, k.watchOptions(name, rv))
		if err != nil {
			if ctx.Err() != nil {
				return end(ExitError, "gave up waiting: "+ctx.Err().Error())
			}
			return fmt.Errorf("watching Split %s/%s: %w", k.ns, name, err)
		}
		restart := false
		for !restart {
			select {
			case <-ctx.Done():
				wi.Stop()
				return end(ExitError, fmt.Sprintf("gave up waiting for revision %s: %v", w.Revision, ctx.Err()))
			case <-tick:
				show()
			case ev, ok := <-wi.ResultChan():
				if !ok {
					restart = true // the server ends watches now and then: go on from rv
					break
				}
				switch ev.Type {
				case watch.Added, watch.Modified:
					s = ev.Object.(*splitterv1.Split)
					rv = s.ResourceVersion
					show()
					if done, code, summary := w.Outcome(s); done {
						wi.Stop()
						return end(code, summary)
					}
				case watch.Bookmark:
					if o, ok := ev.Object.(client.Object); ok {
						rv = o.GetResourceVersion()
					}
				case watch.Deleted:
					wi.Stop()
					return end(ExitError, fmt.Sprintf("Split %s was deleted (opted out?) before revision %s finished", name, w.Revision))
				case watch.Error:
					wi.Stop()
					if st := apierrors.FromObject(ev.Object); apierrors.IsGone(st) || apierrors.IsResourceExpired(st) {
						// Too old to resume: read it again and watch from there.
						if s, err = k.split(ctx, name); err != nil {
							return err
						}
						rv = s.ResourceVersion
						show()
						if done, code, summary := w.Outcome(s); done {
							return end(code, summary)
						}
					}
					restart = true
				}
			}
		}
	}
}
