"""The event-sourced SQLite log: the one writer, retention, status queries."""
