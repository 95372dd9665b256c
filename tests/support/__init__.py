"""Test support for the tiers that need the real control plane: fixtures and kubectl."""
