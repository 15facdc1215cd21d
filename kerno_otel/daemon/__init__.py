"""The daemon: plugin loading, the run loop, reloads and panics."""
