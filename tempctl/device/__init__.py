"""Talking to a Bitaxe: the AxeOS HTTP client, parsing of its answers, capabilities."""
