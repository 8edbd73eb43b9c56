"""Reusable test helpers (process fixtures for a real leader and agents)."""
