"""Greenlight: a Kubernetes-native human approval gate for automation."""
