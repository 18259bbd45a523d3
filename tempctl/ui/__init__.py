"""Browsing the log: Datasette, read-only."""
