"""Adapters at the edges: Kubernetes, kopf handlers, admission, notifiers, audit sinks."""
