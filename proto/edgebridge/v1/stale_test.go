package edgebridgev1

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates envelope.pb.go the way `make proto`
// does and fails if the checked-in file differs.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc not installed (apt-get install protobuf-compiler); .ci/run installs it")
	}
	dir := t.TempDir()
	plugin := filepath.Join(dir, "protoc-gen-go")
	build := exec.Command("go", "build", "-o", plugin, "google.golang.org/protobuf/cmd/protoc-gen-go")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build protoc-gen-go: %v\n%s", err, out)
	}
	gen := exec.Command("protoc", "--plugin=protoc-gen-go="+plugin, "-I", "../..", "-I", "/usr/include",
		"--go_out="+dir, "--go_opt=paths=source_relative", "edgebridge/v1/envelope.proto")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, out)
	}
	want, err := os.ReadFile(filepath.Join(dir, "edgebridge/v1/envelope.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("envelope.pb.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("proto/edgebridge/v1/envelope.pb.go is stale: run `make proto` and commit the result")
	}
}
