//go:build chaos

package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// edgeNet is a network namespace the test creates for the bridge, joined to
// the host by two veth pairs it also creates, on addresses of the benchmark
// range 198.18.0.0/15 (RFC 2544) that exist only on those interfaces:
//
//	host                              namespace (the bridge)
//	198.18.213.1  <- veth "m" ->      198.18.213.2   MQTT and the bridge's HTTP
//	198.18.213.5  <- veth "k" ->      198.18.213.6   Kafka, the link faults act on
//
// Faults act on the "k" pair only, so the devices, mosquitto and the test's
// view of /metrics are untouched while the Kafka uplink is cut or degraded.
type edgeNet struct {
	t                  *testing.T
	name               string
	hostM, nsM         string // interface names
	hostK, nsK         string
	HostMQTT, NSMQTT   string // addresses
	HostKafka, NSKafka string
	netem              bool
}

// needRoot skips the test unless it runs as root with ip and iptables.
func needRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root for %s (CI runs as root): run `sudo -E make e2e-chaos`", what)
	}
	for _, bin := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s for %s: apt-get install iproute2 iptables", bin, what)
		}
	}
}

func newEdgeNet(t *testing.T) *edgeNet {
	t.Helper()
	needRoot(t, "a network namespace")
	id := os.Getpid() % 100000
	n := &edgeNet{
		t: t, name: fmt.Sprintf("ebchaos%d", id),
		hostM: fmt.Sprintf("ebm%dh", id), nsM: fmt.Sprintf("ebm%dn", id),
		hostK: fmt.Sprintf("ebk%dh", id), nsK: fmt.Sprintf("ebk%dn", id),
		HostMQTT: "198.18.213.1", NSMQTT: "198.18.213.2",
		HostKafka: "198.18.213.5", NSKafka: "198.18.213.6",
	}
	n.cleanup() // leftovers of a killed run with the same pid
	t.Cleanup(n.cleanup)
	n.must("ip", "netns", "add", n.name)
	n.must("ip", "-n", n.name, "link", "set", "lo", "up")
	for _, p := range []struct{ host, ns, hostIP, nsIP string }{
		{n.hostM, n.nsM, n.HostMQTT, n.NSMQTT},
		{n.hostK, n.nsK, n.HostKafka, n.NSKafka},
	} {
		n.must("ip", "link", "add", p.host, "type", "veth", "peer", "name", p.ns)
		n.must("ip", "link", "set", p.ns, "netns", n.name)
		n.must("ip", "addr", "add", p.hostIP+"/30", "dev", p.host)
		n.must("ip", "link", "set", p.host, "up")
		n.must("ip", "-n", n.name, "addr", "add", p.nsIP+"/30", "dev", p.ns)
		n.must("ip", "-n", n.name, "link", "set", p.ns, "up")
	}
	// Is sch_netem there? Some kernels (this CI's) are built without it.
	if err := run("tc", "qdisc", "add", "dev", n.hostK, "root", "netem", "delay", "1ms"); err == nil {
		n.netem = true
		_ = run("tc", "qdisc", "del", "dev", n.hostK, "root")
	}
	return n
}

func (n *edgeNet) cleanup() {
	_ = run("ip", "netns", "del", n.name)
	_ = run("ip", "link", "del", n.hostM)
	_ = run("ip", "link", "del", n.hostK)
}

func (n *edgeNet) must(argv ...string) {
	n.t.Helper()
	if err := run(argv...); err != nil {
		n.t.Fatal(err)
	}
}

// inNS runs argv inside the namespace.
func (n *edgeNet) inNS(argv ...string) error {
	return run(append([]string{"ip", "netns", "exec", n.name}, argv...)...)
}

// blackhole drops every packet on the Kafka link, both ways, without an
// answer: connections neither fail nor progress, only timeouts can tell.
func (n *edgeNet) blackhole(on bool) {
	n.t.Helper()
	op := "-I"
	if !on {
		op = "-D"
	}
	for _, rule := range [][]string{
		{"OUTPUT", "-o", n.nsK, "-j", "DROP"},
		{"INPUT", "-i", n.nsK, "-j", "DROP"},
	} {
		if err := n.inNS(append([]string{"iptables", "-w", op}, rule...)...); err != nil {
			n.t.Fatal(err)
		}
	}
}

// lossy drops each packet on the Kafka link, either way, with probability p
// (iptables statistic: real loss that TCP must retransmit).
func (n *edgeNet) lossy(p float64, on bool) {
	n.t.Helper()
	op := "-I"
	if !on {
		op = "-D"
	}
	prob := fmt.Sprintf("%.3f", p)
	for _, rule := range [][]string{
		{"OUTPUT", "-o", n.nsK, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"},
		{"INPUT", "-i", n.nsK, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"},
	} {
		if err := n.inNS(append([]string{"iptables", "-w", op}, rule...)...); err != nil {
			n.t.Fatal(err)
		}
	}
}

// setNetem puts `netem args` on both ends of the Kafka link (nil removes it).
func (n *edgeNet) setNetem(args []string) {
	n.t.Helper()
	if args == nil {
		_ = run("tc", "qdisc", "del", "dev", n.hostK, "root")
		_ = n.inNS("tc", "qdisc", "del", "dev", n.nsK, "root")
		return
	}
	n.must(append([]string{"tc", "qdisc", "add", "dev", n.hostK, "root", "netem"}, args...)...)
	if err := n.inNS(append([]string{"tc", "qdisc", "add", "dev", n.nsK, "root", "netem"}, args...)...); err != nil {
		n.t.Fatal(err)
	}
}

func run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
