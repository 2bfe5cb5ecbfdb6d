"""Operator tools: replaying dead letters."""
