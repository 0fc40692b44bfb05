"""Cluster-free commands: `kubeserve serve` and `kubeserve package`."""
