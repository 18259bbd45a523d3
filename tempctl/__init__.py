"""tempctl: a thermal guard for Bitaxe miners running AxeOS / ESP-Miner."""

__version__ = "0.1.0"
