"""Metrics, logs and traces for the operator and the agent SDK (DESIGN §6)."""
