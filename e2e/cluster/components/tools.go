//go:build tools

// Package components records the upstream commands built from this module so
// that `go mod tidy` keeps their dependencies.
package components

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
