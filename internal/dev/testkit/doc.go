// Package testkit holds the helpers every package's tests share, so that
// they agree on one timeout policy, one log switch, one way to read a
// metric and one throwaway PKI (like bbolt's internal/btesting and
// Prometheus' util/testutil).
//
// Only _test.go files import it: it is tooling and never ships
// (internal/dev's TestBinaryLinksNoDevCode proves the binary links none of
// internal/dev).
package testkit
