"""First-party kerno-otel plugins, loaded through the same entry points as third-party ones."""
