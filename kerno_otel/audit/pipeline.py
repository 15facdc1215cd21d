"""The audit pipeline, wired in one place.

::

    AuditLog.emit ─> OTel Logger ─> AuditProcessor.on_emit            (the emitting thread)
                                     │ Cleaner: build → redact → validate → encode
                                     │ (other processors on the provider see the clean record)
                                     ▼
                                   transport:  LocalTransport   (audit.pipeline: thread)
                                               WorkerTransport  (process: a pipe to the worker)
                                     ▼
                                   Sealer: seq → chain → Writer thread (group commit, rotation,
                                           checkpoints, the writer's own audit.* records)

The Cleaner runs before anything but the pipeline sees a record: on the
emitting thread, or, in process mode while no other processor is on the
provider, in the worker's clean stage (the same Cleaner, in a child process
of ours, reached over a private pipe). The Sealer runs where the transport
puts it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TextIO

from kerno_otel.audit.processor import AuditProcessor, LocalTransport, Transport
from kerno_otel.audit.record import Cleaner
from kerno_otel.audit.sealer import Sealer
from kerno_otel.config import AuditConfig
from kerno_otel.records.catalogue import BUILTIN_TYPES, EventType
from kerno_otel.records.redact import RedactionRule, Redactor
from kerno_otel.records.schema import SchemaSet
from kerno_otel.records.validate import RecordValidator


def build_cleaner(
    config: AuditConfig,
    event_types: Iterable[EventType],
    rules: Iterable[RedactionRule],
    resource: Mapping[str, str],
) -> Cleaner:
    """The clean half for the built-in types plus ``event_types`` (a plugin's)."""
    extra = {t.name: t for t in event_types}
    types = {**BUILTIN_TYPES, **extra}
    schemas = SchemaSet.builtin().with_types(extra) if extra else SchemaSet.builtin()
    redactor = Redactor(
        [*config.redaction, *rules], {name: t.policies for name, t in types.items()}
    )
    return Cleaner(redactor, RecordValidator(schemas), resource)


def build_sealer(
    config: AuditConfig,
    rules: Iterable[RedactionRule],
    resource: Mapping[str, str],
    *,
    event_types: Iterable[EventType] = (),
    version: str,
    stderr: TextIO,
    exit_process: Callable[[int], None] = os._exit,
) -> Sealer:
    """The seal half (not yet opened). It writes built-in types only; ``event_types`` (a
    plugin's) are the names its loss records may count a record under."""
    cleaner = build_cleaner(config, event_types, rules, resource)
    return Sealer(config, cleaner, version=version, stderr=stderr, exit_process=exit_process)


def build_processor(
    config: AuditConfig,
    *,
    event_types: Iterable[EventType] = (),
    rules: Iterable[RedactionRule] = (),
    resource: Mapping[str, str],
    version: str,
    stderr: TextIO,
    exit_process: Callable[[int], None] = os._exit,
) -> AuditProcessor:
    """The whole pipeline for ``config`` as an opened ``LogRecordProcessor``.

    Raises what opening the log raises: ``AuditFileError``, ``ConfigError``
    (``audit.checkpoint.key_file``), ``ValueError`` (a resource the schema
    refuses), and ``WorkerError`` when the audit worker cannot start.
    """
    rules, event_types = tuple(rules), tuple(event_types)
    cleaner = build_cleaner(config, event_types, rules, resource)
    transport: Transport
    if config.pipeline == "process":
        from kerno_otel.audit.worker.client import WorkerTransport

        transport = WorkerTransport(
            config,
            cleaner,
            event_types,
            rules,
            version=version,
            stderr=stderr,
            exit_process=exit_process,
        )
    else:
        sealer = build_sealer(
            config,
            rules,
            resource,
            event_types=event_types,
            version=version,
            stderr=stderr,
            exit_process=exit_process,
        )
        transport = LocalTransport(sealer)
    transport.open()
    return AuditProcessor(cleaner, transport, always=config.fsync == "always", stderr=stderr)
