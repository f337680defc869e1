package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/edgebridge/edgebridge/internal/config"
	"github.com/edgebridge/edgebridge/internal/forward"
	"github.com/edgebridge/edgebridge/internal/mqtt"
)

// Exit codes of the edgebridge command.
const (
	ExitOK      = 0 // done: a clean shutdown after SIGTERM/SIGINT, a valid config, a version printed
	ExitFailure = 1 // runtime failure: a component failed, the buffer or the HTTP port could not be opened
	ExitUsage   = 2 // bad command line, or a config file that is missing or invalid
	ExitForced  = 3 // a second signal ended the shutdown early; committed records are safe on disk
	ExitDamaged = 4 // a buffer file was found damaged while running; the next start quarantines it
)

const usage = `edgebridge: MQTT to Kafka bridge for edge nodes

Usage:
  edgebridge --config FILE            run (same as "run")
  edgebridge run --config FILE        run until SIGTERM or SIGINT
  edgebridge validate --config FILE   check the config file and exit
  edgebridge config [--config FILE]   print the configuration in effect as YAML, every
                                      default filled in and a comment per key; without
                                      --config, the defaults (secrets are never printed)
  edgebridge deadletters --config FILE [list] [--payloads]
                                      print the dead letters, one JSON object a line
                                      (--payloads: with payload and value, base64)
  edgebridge deadletters --config FILE requeue SEQ... | --reason R | --all
                                      send these dead letters again (with new sequences),
                                      routed by the current routes, then compact dead.db
  edgebridge version                  print the version and exit

deadletters opens the buffer itself: stop the running bridge first.

Exit codes:
  0  clean shutdown, valid config, or version printed
  1  runtime failure (a component failed, the buffer or HTTP port could not be opened)
  2  usage or config error
  3  a second signal ended the shutdown early (committed records are safe on disk)
  4  a buffer file was found damaged while running (the next start quarantines it)
`

// Main is the edgebridge command. It returns the process exit code.
func Main(args []string, stdout, stderr io.Writer, build Build) int {
	build = resolveBuild(build)
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version":
		if len(args) > 0 {
			fmt.Fprintf(stderr, "edgebridge version takes no arguments\n\n%s", usage)
			return ExitUsage
		}
		fmt.Fprintf(stdout, "edgebridge %s (revision %s, %s, %s/%s)\n", build.Version, build.Revision,
			runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return ExitOK
	case "help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	case "run", "validate", "deadletters", "config":
	default:
		fmt.Fprintf(stderr, "edgebridge: unknown command %q\n\n%s", cmd, usage)
		return ExitUsage
	}

	fs := flag.NewFlagSet("edgebridge "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	path := fs.String("config", "", "path of the YAML config file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 && cmd != "deadletters" {
		fmt.Fprintf(stderr, "edgebridge %s: unexpected argument %q\n\n%s", cmd, fs.Arg(0), usage)
		return ExitUsage
	}
	if cmd == "config" && *path == "" {
		return printConfig(stdout, stderr, config.WriteDefaults)
	}
	if *path == "" {
		fmt.Fprintf(stderr, "edgebridge %s: --config FILE is required\n\n%s", cmd, usage)
		return ExitUsage
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "edgebridge: invalid config:\n%v\n", err)
		return ExitUsage
	}
	if cmd == "config" {
		return printConfig(stdout, stderr, cfg.WriteYAML)
	}
	if cmd == "deadletters" {
		return deadLetters(cfg, fs.Args(), stdout, stderr)
	}
	if cmd == "validate" {
		fmt.Fprintf(stdout, "%s: ok (node_id %s, mqtt %s, %d routes, kafka %s, buffer %s)\n", *path, cfg.NodeID,
			cfg.MQTT.URL, len(cfg.MQTT.Routes), strings.Join(cfg.Forward.Brokers, ","), cfg.Buffer.Dir)
		return ExitOK
	}

	log := NewLogger(stderr, cfg.Log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		log.Info("signal received; stopping (a second signal exits at once)", "signal", s.String())
		cancel()
		if s, ok = <-sigs; ok {
			log.Warn("second signal; exiting at once: committed records are safe on disk, uncommitted messages were never acknowledged and the broker sends them again",
				"signal", s.String())
			os.Exit(ExitForced)
		}
	}()
	if err := Run(ctx, cfg, log, build); err != nil {
		log.Error("edgebridge failed", "err", err)
		if isConfigError(err) {
			return ExitUsage
		}
		if errors.Is(err, ErrBufferDamaged) {
			return ExitDamaged
		}
		return ExitFailure
	}
	return ExitOK
}

func printConfig(stdout, stderr io.Writer, write func(io.Writer) error) int {
	if err := write(stdout); err != nil {
		fmt.Fprintf(stderr, "edgebridge config: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

// isConfigError tells config problems found only when a component starts
// (a TLS file that is missing or not PEM) from runtime failures.
func isConfigError(err error) bool {
	for _, e := range []error{mqtt.ErrInvalidConfig, mqtt.ErrTLSMaterial, forward.ErrInvalidConfig, forward.ErrTLSMaterial} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// NewLogger builds the process logger from log.level and log.format.
func NewLogger(w io.Writer, c config.Log) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// resolveBuild fills what the linker did not stamp (go run, go install) from
// the module's build information.
func resolveBuild(b Build) Build {
	info, ok := debug.ReadBuildInfo()
	if b.Version == "" {
		b.Version = "dev"
		if ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.Version = info.Main.Version
		}
	}
	if b.Revision == "" {
		b.Revision = "unknown"
		if ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" {
					b.Revision = s.Value
				}
			}
		}
	}
	return b
}
