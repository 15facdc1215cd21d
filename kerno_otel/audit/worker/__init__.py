"""The audit worker: the sealing half of the pipeline in a child process (pipeline: process)."""
