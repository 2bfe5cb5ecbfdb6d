"""Metrics, health endpoints and logging."""
