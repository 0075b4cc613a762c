"""Logs, metrics, health checks and the request context: how every service reports what it does."""
