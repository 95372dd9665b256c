//go:build tools

// Package tools pins the etcd server so that `go build` of it resolves from this module.
package tools

import _ "go.etcd.io/etcd/server/v3"
