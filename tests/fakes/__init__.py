"""Local stand-ins for the external services Greenlight talks to, for tests."""
