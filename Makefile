# edgebridge — build, test and demo targets.
#
# Quickstart on a fresh machine (only Go needed):
#   make demo   # the real binary against an embedded MQTT broker and Kafka
#   make test   # every test, with -race

GO        ?= go
BIN       ?= bin
PKG       := github.com/edgebridge/edgebridge
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)
BUILD     := CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)"

.PHONY: build build-arm64 test e2e bench proto lint demo clean image deploy-check test-arm64 e2e-chaos soak reliability

## build: static binary for this machine in bin/edgebridge
build:
	$(BUILD) -o $(BIN)/edgebridge ./cmd/edgebridge

## build-arm64: static linux/arm64 binary in bin/edgebridge-linux-arm64 (edge nodes)
build-arm64:
	GOOS=linux GOARCH=arm64 $(BUILD) -o $(BIN)/edgebridge-linux-arm64 ./cmd/edgebridge

## test: every test with the race detector; tests that need mosquitto or protoc
## skip with an install hint when they are missing (.ci/run installs both).
test:
	$(GO) test -race -timeout 10m ./...

## e2e: the end-to-end tests alone, verbose (also part of `make test`): the real
## binary, mosquitto and an in-process Kafka, through a Kafka outage and a SIGKILL
e2e:
	$(GO) test -race -count=1 -v -timeout 10m ./test/e2e/

## bench: the pipeline against the physical ceiling on this machine, side by side
## (docs/performance.md; ~10 min). BENCH_FLAGS=-quick: ~2 min; BENCH_FLAGS=-brokers=host:port:
## a real Kafka. Hot-path package benchmarks: go test -run '^$' -bench . -benchmem ./...
bench: build
	$(GO) build -o $(BIN)/edgebridge-bench ./cmd/edgebridge-bench
	$(BIN)/edgebridge-bench -bin $(BIN)/edgebridge $(BENCH_FLAGS)

## proto: regenerate proto/edgebridge/v1/envelope.pb.go (protoc from Debian's
## protobuf-compiler; protoc-gen-go pinned through the tool directive in go.mod)
proto:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	protoc --plugin=protoc-gen-go=$(BIN)/protoc-gen-go -I proto -I /usr/include \
		--go_out=proto --go_opt=paths=source_relative edgebridge/v1/envelope.proto

## lint: formatting, tidy go.mod files (the main module's and tools/'s) and vet
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	cd tools && $(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) vet -tags chaos ./test/...

## demo: the real binary, simulated devices, Kafka cut midway, live counters
demo: build
	$(GO) run ./cmd/devstack --bin $(BIN)/edgebridge

clean:
	rm -rf $(BIN)

IMAGE ?= registry.example.com/edgebridge

## image: the arm64 image (needs docker buildx; CI checks its build line with deploy-check)
image:
	docker buildx build --platform linux/arm64 -f Dockerfile.arm64 \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
		-t $(IMAGE):$(VERSION) .

## deploy-check: the Dockerfile's build line, manifests, rules and dashboard against the live binary
deploy-check:
	VERSION=$(VERSION) REVISION=$(REVISION) ci/deploy-check.sh

## test-arm64: buffer, mqtt and forward tests as arm64 code under qemu-aarch64-static
test-arm64:
	ci/arm64-test.sh

## e2e-chaos: the chaos suite at CI sizes on real Apache Kafka (from Maven Central,
## cached in ~/.cache/edgebridge) and mosquitto; root-only scenarios skip without root
e2e-chaos:
	$(GO) test -tags chaos -p 1 -count=1 -v -timeout 40m ./test/kafka/ ./test/chaos/

## soak: the chaos suite at full sizes (10-minute partition with >= 1M messages, 50 kills)
soak:
	EDGEBRIDGE_SOAK=1 $(GO) test -tags chaos -p 1 -count=1 -v -timeout 3h ./test/chaos/

## reliability: e2e-chaos, rewriting the results table in docs/reliability.md
reliability:
	EDGEBRIDGE_WRITE_RELIABILITY=1 $(MAKE) e2e-chaos
