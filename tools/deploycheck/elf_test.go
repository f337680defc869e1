package deploycheck

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"testing"
)

// maxImageBinary is the size budget of the arm64 binary: edge nodes pull
// the image over thin uplinks and keep it on small SD cards.
const maxImageBinary = 15 << 20

// The binary that Dockerfile.arm64's build line produced
// ($EDGEBRIDGE_ARM64_BIN, set by ci/deploy-check.sh) is what a scratch image
// can run on an arm64 node: a static aarch64 executable without an ELF
// interpreter or shared libraries, built without cgo, trimmed, stripped
// (no symbols, no DWARF) and stamped with its revision.
func TestArm64Binary(t *testing.T) {
	path := os.Getenv("EDGEBRIDGE_ARM64_BIN")
	if path == "" {
		t.Skip("EDGEBRIDGE_ARM64_BIN not set: ci/deploy-check.sh builds it from Dockerfile.arm64")
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s is not an ELF file: %v", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB {
		t.Errorf("%s: machine %s %s %s, want EM_AARCH64 ELFCLASS64 little-endian", path, f.Machine, f.Class, f.Data)
	}
	if f.Type != elf.ET_EXEC {
		t.Errorf("ELF type %s, want ET_EXEC (a static, non-PIE executable)", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("program header %s: the binary is dynamically linked; scratch has no loader", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("needs shared libraries %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("has a symbol table: want -ldflags -s")
	}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > maxImageBinary {
		t.Errorf("binary is %.2f MiB, budget %d MiB", float64(st.Size())/(1<<20), maxImageBinary>>20)
	}
	t.Logf("arm64 binary: %d bytes (%.2f MiB)", st.Size(), float64(st.Size())/(1<<20))

	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatalf("read Go build info: %v", err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"GOOS": "linux", "GOARCH": "arm64", "CGO_ENABLED": "0", "-trimpath": "true"} {
		if settings[k] != want {
			t.Errorf("build setting %s = %q, want %q", k, settings[k], want)
		}
	}
	// -trimpath keeps -ldflags out of the build info: check its effects.
	for _, sec := range []string{".debug_info", ".zdebug_info"} {
		if f.Section(sec) != nil {
			t.Errorf("has %s: want -ldflags -w", sec)
		}
	}
	// The -X stamps: ci/deploy-check.sh passes the values it built with.
	if rev := os.Getenv("EDGEBRIDGE_ARM64_REVISION"); rev != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(rev)) {
			t.Errorf("revision %s is not stamped into the binary (-X main.revision)", rev)
		}
	}
	if bi.Path != "github.com/edgebridge/edgebridge/cmd/edgebridge" {
		t.Errorf("main package %s, want github.com/edgebridge/edgebridge/cmd/edgebridge", bi.Path)
	}
}
