"""Offline tools over logs: replay, fit, tune, and the reports they share."""
