"""Which controls each event type is evidence for: SOC 2 CC7.2, ISO/IEC 27001:2022 A.8.15
and HIPAA 164.312(b).

Shown in ``audit report`` (terminal, JSON, HTML) and in ``docs/audit-schema.md``;
``tests/test_review_docs.py`` fails when the two disagree or a type is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Control:
    id: str
    framework: str
    title: str
    requirement: str


CONTROLS: Final[tuple[Control, ...]] = (
    Control(
        "SOC 2 CC7.2",
        "AICPA Trust Services Criteria (SOC 2)",
        "System monitoring",
        "The entity monitors system components and the operation of those controls for "
        "anomalies that are indicative of malicious acts, natural disasters, and errors "
        "affecting the entity's ability to meet its objectives; anomalies are analyzed to "
        "determine whether they represent security events.",
    ),
    Control(
        "ISO 27001:2022 A.8.15",
        "ISO/IEC 27001:2022 Annex A",
        "Logging",
        "Logs that record activities, exceptions, faults and other relevant events shall be "
        "produced, stored, protected and analysed.",
    ),
    Control(
        "HIPAA 164.312(b)",
        "HIPAA Security Rule, 45 CFR 164.312(b)",
        "Audit controls",
        "Implement hardware, software, and/or procedural mechanisms that record and examine "
        "activity in information systems that contain or use electronic protected health "
        "information.",
    ),
)

_SOC2, _ISO, _HIPAA = (c.id for c in CONTROLS)

#: Event type -> (controls it is evidence for, what it shows).
EVIDENCE: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "daemon.start": ((_SOC2, _ISO, _HIPAA), "the monitoring daemon started, with what plugins"),
    "daemon.stop": ((_SOC2, _ISO, _HIPAA), "monitoring stopped, and why"),
    "daemon.panic": ((_SOC2, _ISO), "monitoring failed (a fault), traceback digest only"),
    "config.reload": (
        (_SOC2, _ISO, _HIPAA),
        "who changed the configuration, what changed, what was applied",
    ),
    "ai.call": ((_ISO, _HIPAA), "data sent off the host to an LLM, its size and redactions"),
    "finding.emit": ((_SOC2, _ISO), "anomalies detected and where they were reported"),
    "auth.failure": ((_SOC2, _ISO, _HIPAA), "refused access attempts, with suppressed counts"),
    "bpf.load": ((_SOC2, _ISO, _HIPAA), "kernel probes loaded: privileged actions"),
    "plugin.load": ((_ISO, _HIPAA), "code loaded into the daemon, by distribution and version"),
    "plugin.error": ((_SOC2, _ISO), "faults in plugins, with suppressed counts of repeats"),
    "audit.start": ((_ISO, _HIPAA), "the audit log opened or resumed"),
    "audit.rotate": ((_ISO,), "log files rotated, linked by hash (storage)"),
    "audit.loss": ((_SOC2, _ISO, _HIPAA), "records the log could not keep, owned up to"),
    "audit.recover": ((_SOC2, _ISO), "a crash mid-write, repaired on start"),
    "audit.checkpoint": ((_ISO, _HIPAA), "signed statements that protect the log from cuts"),
}
