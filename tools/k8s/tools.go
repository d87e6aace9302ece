//go:build tools

// Package tools records the main packages built by hardway/binaries.py so that
// `go mod tidy` keeps every module they need in go.mod and go.sum. etcd and
// etcdctl come at the version k8s.io/kubernetes itself pins for
// go.etcd.io/etcd/client/v3, so they share one module graph with Kubernetes.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
