//go:build tools

// Package kwok records the upstream command built from this module so that
// `go mod tidy` keeps its dependencies.
package kwok

import _ "sigs.k8s.io/kwok/cmd/kwok"
