"""Loading the BPF programs plugins register: each attempt audited, each failure isolated."""
