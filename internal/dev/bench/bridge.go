package bench

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/edgebridge/edgebridge/internal/dev/devstack"
)

// bridgeConfig is the bridge's config for a run: production defaults
// everywhere (zstd, linger 5ms, acks=all, an fsync per group commit), a
// buffer large enough for the backlog scenarios, and pprof on.
func bridgeConfig(nodeID, mqttURL string, brokers []string, topic, bufferDir, listen string) devstack.BridgeConfig {
	return devstack.BridgeConfig{
		NodeID: nodeID, MQTTURL: mqttURL, Filter: TopicFilter, Brokers: brokers, Topic: topic,
		BufferDir: bufferDir, MaxBytes: "4GiB", HTTPListen: listen, Pprof: true, Production: true,
	}
}

// profile fetches a CPU profile of d (whole seconds, at least one) from
// the bridge's pprof endpoint at listen into path.
func profile(listen string, d time.Duration, path string) error {
	return fetch(listen, fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds()))), d+10*time.Second, path)
}

// heapProfile fetches a heap profile into path.
func heapProfile(listen, path string) error {
	return fetch(listen, "/debug/pprof/heap", 10*time.Second, path)
}

func fetch(listen, url string, timeout time.Duration, path string) error {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + listen + url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// metric reads one metric of the bridge, summed over its series.
func metric(b *devstack.Bridge, name string) (float64, error) {
	m, err := b.Scrape()
	if err != nil {
		return 0, err
	}
	return m[name], nil
}
