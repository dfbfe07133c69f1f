package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce   sync.Once
	splitterBin string
	buildErr    error
)

// SplitterBinary is the real splitter binary: $SPLITTER_BIN (make test
// builds it), or built once per test binary.
func SplitterBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if b := os.Getenv("SPLITTER_BIN"); b != "" {
			splitterBin = b
			return
		}
		dir, err := os.MkdirTemp("", "splitter-bin-")
		if err != nil {
			buildErr = err
			return
		}
		splitterBin = filepath.Join(dir, "splitter")
		out, err := exec.Command("go", "build", "-o", splitterBin, "splitter.dev/splitter/cmd/splitter").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building splitter: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return splitterBin
}
