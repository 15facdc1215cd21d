"""Configuration: the YAML file, ``KERNO_*`` overrides and embedded defaults, checked per key."""
