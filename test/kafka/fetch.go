package kafka

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// Version is the Apache Kafka release the suite runs; keep it in step with
// kafka.version in pom.xml.
const Version = "4.1.1"

// ErrNoJava means java or mvn is missing, so the broker cannot be fetched or
// run.
var ErrNoJava = errors.New("real Kafka needs Java 17+ and Maven: apt-get install openjdk-17-jre-headless maven")

var fetchMu sync.Mutex

// Libs returns the directory holding the broker's jars, fetching them from
// Maven Central on first use. The directory is $EDGEBRIDGE_KAFKA_LIBS when
// set, else $HOME/.cache/edgebridge/kafka-<Version>/libs (or under
// $XDG_CACHE_HOME); later runs reuse it without touching the network.
func Libs() (string, error) {
	fetchMu.Lock()
	defer fetchMu.Unlock()
	if _, err := exec.LookPath("java"); err != nil {
		return "", ErrNoJava
	}
	dir := os.Getenv("EDGEBRIDGE_KAFKA_LIBS")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("kafka jar cache: %w", err)
		}
		dir = filepath.Join(cache, "edgebridge", "kafka-"+Version, "libs")
	}
	done := filepath.Join(dir, ".complete")
	if _, err := os.Stat(done); err == nil {
		return dir, nil
	}
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return "", ErrNoJava
	}
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("kafka: cannot locate pom.xml")
	}
	pom := filepath.Join(filepath.Dir(self), "pom.xml")
	// Copy into a fresh directory and rename it into place, so an
	// interrupted download never leaves a half-filled cache behind.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("kafka jar cache: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "libs-")
	if err != nil {
		return "", fmt.Errorf("kafka jar cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(mvn, "-q", "-B", "-f", pom, "dependency:copy-dependencies",
		"-DincludeScope=runtime", "-DoutputDirectory="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("fetch kafka %s from maven central: %v\n%s", Version, err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(Version+"\n"), 0o644); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("kafka jar cache: %w", err)
	}
	return dir, nil
}
