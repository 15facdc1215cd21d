"""The audit log: emit API, pipeline (clean, then seal and write), files, chain, checkpoints."""
