// Package dev and the packages below it are the tooling that never ships:
// the dev stack of `make demo`, the e2e tests and the chaos suite
// (devstack), the load tool of `make bench` (bench) and the helpers every
// test shares (testkit). Product packages sit beside dev in internal/; none
// of them imports anything from here outside a _test.go file, which
// TestBinaryLinksNoDevCode proves on the edgebridge binary.
package dev
