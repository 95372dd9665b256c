//go:build tools

// Package tools pins kube-apiserver so that `go build` of it resolves from this module.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
