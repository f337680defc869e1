package dev

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The edgebridge binary links none of the tooling that never ships: not the
// packages under internal/dev or test/, not kfake (the in-process Kafka),
// not mochi-mqtt (the embedded broker). An import of one of them from
// product code fails here, not in a code review.
func TestBinaryLinksNoDevCode(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/edgebridge/edgebridge/cmd/edgebridge").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/edgebridge/edgebridge/internal/dev",
		"github.com/edgebridge/edgebridge/test",
		"github.com/twmb/franz-go/pkg/kfake",
		"github.com/mochi-mqtt/",
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing")
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("cmd/edgebridge links %s (%s never ships)", dep, f)
			}
		}
	}
}
