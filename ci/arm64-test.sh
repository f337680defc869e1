#!/usr/bin/env bash
# Runs the buffer, mqtt and forward package tests as arm64 code: cross-
# compiled test binaries executed by qemu-aarch64-static (user-mode
# emulation, no arm64 machine needed). This catches what only shows on the
# edge nodes' architecture: memory alignment of atomics, endianness
# assumptions, a dependency without arm64 support.
#
#   ci/arm64-test.sh              # the three packages
#   ci/arm64-test.sh -run Foo     # extra flags go to go test
#
# Under emulation:
#   - no -race: the race detector needs cgo and a native arm64 toolchain.
#   - tests that re-execute their own test binary as a child process
#     (TestCrashRecovery, TestOpenFailureIsNotDamage and TestRuntimeDamage in
#     buffer, TestRedeliveryAfterSIGKILL in mqtt) need
#     the kernel to run an arm64 ELF directly, i.e. qemu registered in
#     binfmt_misc. Where it is not (containers, like this CI) they are
#     skipped here; they run natively in `make test` on every commit.
#   - mosquitto (the tests' real broker) is the host's own binary and runs
#     natively; the arm64 test code talks to it over loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
	sudo_cmd=()
	[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
	"${sudo_cmd[@]}" apt-get update -q
	DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends qemu-user-static
fi

skip=()
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
	echo "arm64-test: qemu-aarch64 is not registered in binfmt_misc: skipping the tests that re-execute the test binary" >&2
	skip=(-skip '^(TestCrashRecovery|TestRedeliveryAfterSIGKILL|TestOpenFailureIsNotDamage|TestRuntimeDamage)$')
fi

start=$(date +%s)
GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go test -exec qemu-aarch64-static -count=1 -timeout 20m \
	${skip[@]+"${skip[@]}"} "$@" ./internal/buffer/ ./internal/mqtt/ ./internal/forward/
echo "arm64-test: passed under qemu-aarch64-static in $(($(date +%s) - start))s"
