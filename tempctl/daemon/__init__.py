"""The running daemon: the poll loop, sd_notify, metrics and alerts."""
