"""The control core: readings in, decisions out. No I/O; imports no other tempctl package."""
