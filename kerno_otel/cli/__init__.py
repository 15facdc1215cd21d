"""The ``kerno-otel`` command line: a thin click layer over the library.

The root group and its error handling are in :mod:`~kerno_otel.cli.app`; each
command group has its own module, and they are wired to the root here.
"""

from __future__ import annotations

from kerno_otel.cli import audit, bpf, doctor, keys, plugins, review, run, schema
from kerno_otel.cli.app import main

main.add_command(audit.audit)
audit.audit.add_command(review.query)
audit.audit.add_command(review.report)
audit.audit.add_command(review.bundle)
main.add_command(bpf.bpf)
main.add_command(doctor.doctor_command)
main.add_command(keys.keys)
main.add_command(plugins.plugins_command)
main.add_command(run.run)
main.add_command(schema.schema)

__all__ = ["main"]
