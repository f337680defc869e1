#!/usr/bin/env bash
# Checks what ships to the edge, without a Docker engine or a cluster:
#
#  1. Dockerfile.arm64's build line, extracted and run verbatim, makes a
#     static arm64 binary that prints its version under qemu-aarch64-static.
#  2. tools/deploycheck (a separate Go module, so k8s.io/api, kustomize and
#     Prometheus never reach the shipped binary's go.mod; it takes the
#     repository's own module through `replace ... => ../` for the shared
#     test kit and dev stack, internal/dev) renders the K3s
#     kustomizations and decodes every object strictly into the Kubernetes
#     API types, runs `edgebridge validate` on the deployed config with the
#     DaemonSet's environment, starts the example mosquitto.conf, loads the
#     Prometheus configs and rules with Prometheus' own loaders, evaluates
#     the alert expressions, and checks every metric a rule or the Grafana
#     dashboard names against a live /metrics scrape of the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The one build command of the image.
line=$(awk '/^# ci:build-command$/ { getline; print; exit }' Dockerfile.arm64)
case $line in
RUN\ *) ;;
*) echo "deploy-check: Dockerfile.arm64 has no RUN line after '# ci:build-command'" >&2; exit 1 ;;
esac
cmd=${line#RUN }
# BuildKit's --mount=... options belong to RUN, not to the shell command.
while [[ $cmd == --* ]]; do cmd=${cmd#* }; done
# The Dockerfile's ARGs, as `docker buildx build --build-arg` would set them.
export VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
export REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export OUT=$work/image
echo "deploy-check: VERSION=$VERSION REVISION=$REVISION OUT=$OUT"
echo "+ $cmd"
sh -c "$cmd"
arm64=$OUT/edgebridge
size=$(stat -c %s "$arm64")
echo "deploy-check: arm64 binary $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }') MiB, budget 15 MiB)"
if command -v file >/dev/null 2>&1; then
	desc=$(file -b "$arm64")
	echo "deploy-check: $desc"
	case $desc in
	*"ARM aarch64"*"statically linked"*) ;;
	*) echo "deploy-check: not a static aarch64 executable" >&2; exit 1 ;;
	esac
fi
if command -v qemu-aarch64-static >/dev/null 2>&1; then
	out=$(qemu-aarch64-static "$arm64" version)
	echo "deploy-check: qemu-aarch64-static: $out"
	case $out in
	"edgebridge $VERSION (revision $REVISION, "*"linux/arm64)") ;;
	*) echo "deploy-check: unexpected version output from the arm64 binary" >&2; exit 1 ;;
	esac
else
	echo "deploy-check: qemu-aarch64-static not installed (apt-get install qemu-user-static): not running the arm64 binary" >&2
fi

# 2. The host binary, for validate and the live /metrics scrape.
CGO_ENABLED=0 go build -trimpath -o "$work/edgebridge" ./cmd/edgebridge
(cd tools && EDGEBRIDGE_BIN="$work/edgebridge" EDGEBRIDGE_ARM64_BIN="$arm64" EDGEBRIDGE_ARM64_REVISION="$REVISION" \
	go test -count=1 ./...)
echo "deploy-check: ok"
