"""The command line: thin click wiring over the library."""
