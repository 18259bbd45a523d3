"""The simulated world: firmware model, thermal plant, scenarios, emulator, policies."""
