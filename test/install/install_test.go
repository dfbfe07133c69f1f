// Package install tests the Makefile's install and find targets the way a
// fresh machine runs them: in a sandbox whose PATH lacks the tool, with the
// variables that name it unset, HOME and the tool cache empty, and apt-get
// (and, for the pinned tools, `go build`) replaced by stubs on PATH that
// record what they were asked for. The real Makefile and hack/ scripts run;
// only the package manager and the compiler are stubbed, so the tests are
// fast and never install anything on the machine.
//
// A bug of the kind that broke `make test` on fresh machines (issue 17: the
// chromium recipe read $CHROMIUM under `set -u`) fails the "absent" cases
// here, whatever the machine running the test has installed.
package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sandbox is one run's fresh machine: a PATH of symlinks to the real PATH's
// commands less the hidden ones, plus stubs; an empty HOME; a scratch bin/
// and DEBIAN_BIN.
type sandbox struct {
	t         *testing.T
	repo      string
	dir       string
	path      string // the PATH directory
	debianBin string // where the apt-get stub "installs" commands
	bin       string // the Makefile's BIN
	aptLog    string
	goLog     string
	env       map[string]string
}

// machine says what the sandboxed machine has.
type machine struct {
	// onPath: commands put on PATH (as stub executables).
	onPath []string
	// inDebianBin: commands already in DEBIAN_BIN (installed but not on PATH).
	inDebianBin []string
	// aptKnows: package -> the commands it installs; nil: apt-get knows none.
	aptKnows map[string][]string
	// noAptGet: no apt-get on PATH (not a Debian machine).
	noAptGet bool
	// nonRoot: `id -u` says 1000.
	nonRoot bool
	// env: variables set for make (all others that name a tool are unset).
	env map[string]string
}

// hidden are the real commands a sandbox never sees: the tools under test,
// the package manager and the compiler (stubbed), and id (stubbed).
var hidden = []string{"chromium", "chromium-browser", "google-chrome", "prometheus", "promtool",
	"apt-get", "apt-cache", "go", "id"}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err != nil {
		t.Fatalf("no Makefile at the repository root %s: %v", root, err)
	}
	return root
}

func newSandbox(t *testing.T, m machine) *sandbox {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is not on PATH: %v", err)
	}
	realGo, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	realID, err := exec.LookPath("id")
	if err != nil {
		t.Fatalf("id is not on PATH: %v", err)
	}
	dir := t.TempDir()
	s := &sandbox{
		t:         t,
		repo:      repoRoot(t),
		dir:       dir,
		path:      filepath.Join(dir, "path"),
		debianBin: filepath.Join(dir, "usr-bin"),
		bin:       filepath.Join(dir, "bin"),
		aptLog:    filepath.Join(dir, "apt.log"),
		goLog:     filepath.Join(dir, "go.log"),
	}
	for _, d := range []string{s.path, s.debianBin, filepath.Join(dir, "home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.linkPath()

	// Go's own caches stay where they are (HOME moves): the module cache
	// holds the pinned tools' sources, and re-downloading them would only
	// measure the network.
	goenv, err := exec.Command(realGo, "env", "GOMODCACHE", "GOCACHE", "GOPATH", "GOTOOLCHAIN", "GOPROXY", "GOFLAGS").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	vals := strings.Split(string(goenv), "\n")
	s.env = map[string]string{
		"PATH":        s.path,
		"HOME":        filepath.Join(dir, "home"),
		"LANG":        "C",
		"GOMODCACHE":  vals[0],
		"GOCACHE":     vals[1],
		"GOPATH":      vals[2],
		"GOTOOLCHAIN": vals[3],
		"GOPROXY":     vals[4],
		"GOFLAGS":     vals[5],
		"REAL_GO":     realGo,
		"REAL_ID":     realID,
		"APT_LOG":     s.aptLog,
		"GO_LOG":      s.goLog,
		"STUB_DEBIAN": s.debianBin,
	}
	for k, v := range m.env {
		s.env[k] = v
	}

	for _, c := range m.onPath {
		s.write(filepath.Join(s.path, c), "#!/bin/sh\necho stub "+c+"\n")
	}
	for _, c := range m.inDebianBin {
		s.write(filepath.Join(s.debianBin, c), "#!/bin/sh\necho stub "+c+"\n")
	}
	if !m.noAptGet {
		var known []string
		for pkg, cmds := range m.aptKnows {
			known = append(known, pkg+"="+strings.Join(cmds, ","))
		}
		s.env["APT_KNOWS"] = strings.Join(known, " ")
		s.write(filepath.Join(s.path, "apt-get"), aptGetStub)
	}
	uid := "0"
	if m.nonRoot {
		uid = "1000"
	}
	s.write(filepath.Join(s.path, "id"), strings.ReplaceAll(idStub, "UID", uid))
	s.write(filepath.Join(s.path, "go"), goStub)
	return s
}

// linkPath fills the sandbox's PATH directory with links to every command on
// the real PATH (the first of each name wins, as a shell would pick) except
// the hidden ones.
func (s *sandbox) linkPath() {
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || slices.Contains(hidden, name) {
				continue
			}
			link := filepath.Join(s.path, name)
			if _, err := os.Lstat(link); err == nil {
				continue
			}
			if err := os.Symlink(filepath.Join(d, name), link); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

func (s *sandbox) write(path, content string) {
	s.t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		s.t.Fatal(err)
	}
}

// make runs the repository's Makefile on target with the sandbox's
// environment only (no MAKEFLAGS from an enclosing make, no CHROMIUM,
// PROMETHEUS_LEGACY, SPLITTER_TOOLS_CACHE... unless the case sets them).
func (s *sandbox) make(args ...string) (string, error) {
	s.t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-C", s.repo, "BIN=" + s.bin, "DEBIAN_BIN=" + s.debianBin}, args...)...)
	cmd.Env = nil
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// aptRequests are the packages apt-get was asked to install, and whether an
// `apt-get update` came before the first of them.
func (s *sandbox) aptRequests() (installs []string, updatedFirst bool, calls int) {
	data, err := os.ReadFile(s.aptLog)
	if os.IsNotExist(err) {
		return nil, false, 0
	}
	if err != nil {
		s.t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		calls++
		switch {
		case slices.Contains(f, "update"):
			if len(installs) == 0 {
				updatedFirst = true
			}
		case slices.Contains(f, "install"):
			installs = append(installs, f[len(f)-1])
		}
	}
	return installs, updatedFirst, calls
}

// goBuilds are the `go build` calls: "<module dir> <package> -> <output name>".
func (s *sandbox) goBuilds() []string {
	data, err := os.ReadFile(s.goLog)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	var builds []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		var out string
		for i := range f {
			if f[i] == "-o" && i+1 < len(f) {
				out = filepath.Base(f[i+1])
			}
		}
		builds = append(builds, filepath.Base(f[0])+" "+f[len(f)-1]+" -> "+out)
	}
	return builds
}

// aptGetStub records its arguments; `install P` succeeds for the packages in
// $APT_KNOWS ("pkg=cmd,cmd pkg2=cmd") by writing their commands into
// $STUB_DEBIAN, as Debian's package writes them into /usr/bin, and fails as
// apt-get does for a package it cannot locate.
const aptGetStub = `#!/bin/sh
echo "$*" >> "$APT_LOG"
for a in "$@"; do
  case "$a" in update) exit 0 ;; esac
done
for last in "$@"; do :; done
for entry in $APT_KNOWS; do
  if [ "${entry%%=*}" = "$last" ]; then
    for c in $(echo "${entry#*=}" | tr , ' '); do
      printf '#!/bin/sh\necho installed %s\n' "$c" > "$STUB_DEBIAN/$c"
      chmod +x "$STUB_DEBIAN/$c"
    done
    exit 0
  fi
done
echo "E: Unable to locate package $last" >&2
exit 100
`

// idStub answers `id -u` as the case's user; anything else goes to id.
const idStub = `#!/bin/sh
if [ "$*" = "-u" ]; then echo UID; exit 0; fi
exec "$REAL_ID" "$@"
`

// goStub records `go build` (its directory and arguments) and writes a
// stand-in executable at -o; $GO_BUILD_FAILS fails builds whose -o ends in
// it. Every other go command is the real one (go list, go env).
const goStub = `#!/bin/sh
if [ "$1" = build ]; then
  echo "$(pwd) $*" >> "$GO_LOG"
  out=; prev=
  for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
  if [ -n "${GO_BUILD_FAILS:-}" ] && [ "${out##*/}" = "$GO_BUILD_FAILS" ]; then
    echo "stub: build of $out failed" >&2; exit 1
  fi
  printf '#!/bin/sh\necho built\n' > "$out" && chmod +x "$out"
  exit 0
fi
exec "$REAL_GO" "$@"
`

// debianTool is one command the Makefile finds or installs from a Debian
// package, and the target that does it.
type debianTool struct {
	target   string
	commands map[string]string // command -> the variable that names it
	pkg      string
	// missing is the documented message when the tool cannot be installed
	// (hack/debian-tool.sh, README "What a fresh machine needs").
	missing string
	// aptFailed is the message when apt-get could not install it.
	aptFailed string
}

var debianTools = []debianTool{
	{
		target:    "chromium",
		commands:  map[string]string{"chromium": "CHROMIUM"},
		pkg:       "chromium",
		missing:   "chromium is missing: install it (Debian: apt-get install chromium) or set CHROMIUM=/path/to/chromium",
		aptFailed: "apt-get could not install chromium (chromium): install it by hand or set CHROMIUM=/path/to/chromium",
	},
	{
		target:    "prometheus",
		commands:  map[string]string{"prometheus": "PROMETHEUS_LEGACY", "promtool": "PROMTOOL"},
		pkg:       "prometheus",
		missing:   "prometheus is missing: install it (Debian: apt-get install prometheus) or set PROMETHEUS_LEGACY=/path/to/prometheus",
		aptFailed: "apt-get could not install prometheus (prometheus): install it by hand or set PROMETHEUS_LEGACY=/path/to/prometheus",
	},
}

func TestDebianTools(t *testing.T) {
	for _, tool := range debianTools {
		cmds := slices.Sorted(func(yield func(string) bool) {
			for c := range tool.commands {
				if !yield(c) {
					return
				}
			}
		})
		// varsTo sets every variable of the tool to path.
		varsTo := func(path string) map[string]string {
			env := map[string]string{}
			for _, v := range tool.commands {
				env[v] = path
			}
			return env
		}
		knows := map[string][]string{tool.pkg: cmds}
		cases := []struct {
			name        string
			machine     machine
			wantInstall []string // packages apt-get is asked to install, in order
			wantErr     string   // "" when the target must succeed
		}{
			{name: "absent, installed with apt-get", machine: machine{aptKnows: knows}, wantInstall: []string{tool.pkg}},
			{name: "absent, apt-get cannot install it", machine: machine{}, wantInstall: []string{tool.pkg}, wantErr: tool.aptFailed},
			{name: "absent, no apt-get", machine: machine{noAptGet: true}, wantErr: tool.missing},
			{name: "absent, not root", machine: machine{nonRoot: true, aptKnows: knows}, wantErr: tool.missing},
			{name: "on PATH", machine: machine{onPath: cmds, aptKnows: knows}},
			{name: "installed but not on PATH", machine: machine{inDebianBin: cmds, aptKnows: knows}},
			{name: "named by its variable", machine: machine{aptKnows: knows, env: varsTo("/bin/true")}},
			{name: "named by its variable, a command on PATH", machine: machine{aptKnows: knows, env: varsTo("true")}},
			{
				name:    "its variable names nothing",
				machine: machine{aptKnows: knows, env: varsTo("/nonexistent/" + tool.target)},
				wantErr: tool.commands[cmds[0]] + "=/nonexistent/" + tool.target + " is not an executable",
			},
		}
		for _, tc := range cases {
			t.Run(tool.target+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				s := newSandbox(t, tc.machine)
				out, err := s.make(tool.target)
				installs, updatedFirst, calls := s.aptRequests()
				if tc.wantErr == "" && err != nil {
					t.Fatalf("make %s failed: %v\n%s", tool.target, err, out)
				}
				if tc.wantErr != "" {
					if err == nil {
						t.Fatalf("make %s succeeded, want it to fail with %q\n%s", tool.target, tc.wantErr, out)
					}
					if !strings.Contains(out, tc.wantErr) {
						t.Fatalf("make %s failed without the documented message %q:\n%s", tool.target, tc.wantErr, out)
					}
				}
				if !slices.Equal(installs, tc.wantInstall) {
					t.Fatalf("apt-get was asked to install %q, want %q\n%s", installs, tc.wantInstall, out)
				}
				if len(tc.wantInstall) == 0 && calls > 0 {
					t.Fatalf("apt-get ran %d times though nothing was to be installed\n%s", calls, out)
				}
				if len(tc.wantInstall) > 0 && !updatedFirst {
					t.Fatalf("apt-get install ran before apt-get update: a fresh machine has no package lists\n%s", out)
				}
				if tc.wantErr == "" && len(tc.wantInstall) > 0 {
					for _, c := range cmds {
						if _, err := os.Stat(filepath.Join(s.debianBin, c)); err != nil {
							t.Fatalf("%s is not installed after make %s: %v", c, tool.target, err)
						}
					}
				}
			})
		}
	}
}

// pinnedTools is what `make tools` builds: tools module (hack/tools/<dir>),
// package, and the binary's name.
var pinnedTools = []string{
	"etcd go.etcd.io/etcd/server/v3 -> etcd",
	"kube k8s.io/kubernetes/cmd/kube-apiserver -> kube-apiserver",
	"kube k8s.io/kubernetes/cmd/kube-controller-manager -> kube-controller-manager",
	"kube k8s.io/kubernetes/cmd/kube-scheduler -> kube-scheduler",
	"kwok sigs.k8s.io/kwok/cmd/kwok -> kwok",
	"controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen -> controller-gen",
	"prometheus github.com/prometheus/prometheus/cmd/prometheus -> prometheus",
}

// binaries lists the executables under dir, relative to it.
func binaries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if info, err := d.Info(); err == nil && !d.IsDir() && info.Mode()&0o111 != 0 {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestTools(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, machine{})
	// With HOME set and SPLITTER_TOOLS_CACHE and XDG_CACHE_HOME unset, the
	// cache is ~/.cache/splitter/tools.
	cache := filepath.Join(s.env["HOME"], ".cache", "splitter", "tools")

	// A fresh machine: every pinned tool is built once, from its tools module.
	out, err := s.make("tools")
	if err != nil {
		t.Fatalf("make tools on a fresh machine: %v\n%s", err, out)
	}
	builds := s.goBuilds()
	slices.Sort(builds)
	want := slices.Clone(pinnedTools)
	slices.Sort(want)
	if !slices.Equal(builds, want) {
		t.Fatalf("make tools built\n  %s\nwant\n  %s", strings.Join(builds, "\n  "), strings.Join(want, "\n  "))
	}
	inBin := binaries(t, s.bin)
	if len(inBin) != len(pinnedTools) {
		t.Fatalf("bin/ holds %q after make tools, want the %d pinned tools", inBin, len(pinnedTools))
	}
	stages, _ := filepath.Glob(filepath.Join(s.bin, "kwok-*", "stages", "*.yaml"))
	if len(stages) != 5 {
		t.Fatalf("kwok's stages: %d files in bin/kwok-*/stages, want 5", len(stages))
	}
	cached, _ := filepath.Glob(filepath.Join(cache, "*", "build-seconds"))
	if len(cached) != 5 {
		t.Fatalf("%d tool modules cached under %s, want 5 (etcd, kube, kwok, controller-gen, prometheus)\n%s", len(cached), cache, out)
	}
	if _, err := os.ReadDir(filepath.Join(s.dir, "home", ".cache")); err != nil {
		t.Fatalf("the cache is not under HOME: %v", err)
	}

	// A second clone on the same machine: nothing built, copied from the cache.
	if err := os.RemoveAll(s.bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.goLog); err != nil {
		t.Fatal(err)
	}
	if out, err := s.make("tools"); err != nil {
		t.Fatalf("make tools from the cache: %v\n%s", err, out)
	}
	if b := s.goBuilds(); len(b) != 0 {
		t.Fatalf("make tools rebuilt %q with the cache full", b)
	}
	if got := binaries(t, s.bin); !slices.Equal(got, inBin) {
		t.Fatalf("bin/ from the cache holds %q, want %q", got, inBin)
	}

	// Everything in place: nothing built, nothing copied.
	if out, err := s.make("tools"); err != nil || len(s.goBuilds()) != 0 {
		t.Fatalf("make tools with everything in place: %v, builds %q\n%s", err, s.goBuilds(), out)
	}
}

func TestToolsCacheVariable(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, machine{})
	s.env["SPLITTER_TOOLS_CACHE"] = filepath.Join(s.dir, "elsewhere")
	if out, err := s.make("tools"); err != nil {
		t.Fatalf("make tools: %v\n%s", err, out)
	}
	if cached, _ := filepath.Glob(filepath.Join(s.dir, "elsewhere", "*", "build-seconds")); len(cached) != 5 {
		t.Fatalf("SPLITTER_TOOLS_CACHE holds %d tool modules, want 5", len(cached))
	}
	if _, err := os.Stat(filepath.Join(s.dir, "home", ".cache")); !os.IsNotExist(err) {
		t.Fatalf("~/.cache was written although SPLITTER_TOOLS_CACHE is set (%v)", err)
	}
}

// A failed build leaves nothing in the cache that a later run would take
// for a built tool.
func TestToolBuildFails(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, machine{})
	s.env["GO_BUILD_FAILS"] = "kube-scheduler"
	out, err := s.make("tools")
	if err == nil {
		t.Fatalf("make tools succeeded although a build failed\n%s", out)
	}
	if !strings.Contains(out, "stub: build of") {
		t.Fatalf("make tools hid the build's error:\n%s", out)
	}
	cache := filepath.Join(s.env["HOME"], ".cache", "splitter", "tools")
	if kube, _ := filepath.Glob(filepath.Join(cache, "kube-*")); len(kube) != 0 {
		t.Fatalf("a failed build of the kube tools module left %q in the cache", kube)
	}
	delete(s.env, "GO_BUILD_FAILS")
	if err := os.Remove(s.goLog); err != nil {
		t.Fatal(err)
	}
	if out, err := s.make("tools"); err != nil {
		t.Fatalf("make tools after the failure: %v\n%s", err, out)
	}
	var kube []string
	for _, b := range s.goBuilds() {
		if strings.HasPrefix(b, "kube ") {
			kube = append(kube, b)
		}
	}
	if len(kube) != 3 {
		t.Fatalf("the retry built %q of the kube module, want its 3 binaries again", kube)
	}
}

// make test installs what the tests need before running them: its recipe
// (make -n) runs every install target above.
func TestTestTargetInstalls(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, machine{aptKnows: map[string][]string{}})
	dry, err := s.make("-n", "test")
	if err != nil {
		t.Fatalf("make -n test: %v\n%s", err, dry)
	}
	for _, want := range []string{
		"hack/debian-tool.sh chromium CHROMIUM chromium",
		"hack/debian-tool.sh prometheus PROMETHEUS_LEGACY prometheus",
		"hack/debian-tool.sh promtool PROMTOOL prometheus",
		"hack/build-tool.sh kube",
		"hack/build-tool.sh prometheus",
		"SPLITTER_REQUIRE_TOOLS=1",
	} {
		if !strings.Contains(dry, want) {
			t.Errorf("make test does not run %q:\n%s", want, dry)
		}
	}
	// A machine that cannot install Debian's packages learns it before the
	// tool builds, not 40 minutes later.
	if apt, build := strings.Index(dry, "hack/debian-tool.sh chromium"), strings.Index(dry, "hack/build-tool.sh"); apt > build {
		t.Errorf("make test builds the pinned tools before it installs Debian's packages:\n%s", dry)
	}
}
