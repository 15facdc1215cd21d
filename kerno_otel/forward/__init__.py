"""The OTLP forwarder: ships what the files hold, from a persistent cursor, at least once."""
