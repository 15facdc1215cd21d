"""The doctor: a diagnosis cycle over the sources' signals, rules to findings, to sinks."""
