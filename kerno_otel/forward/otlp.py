"""The lossless OTLP mapping of an audit line (docs/audit-schema.md), both ways.

``type`` is ``LogRecord.event_name``, ``severity`` the severity text (and its
number), ``ts`` the timestamp in nanoseconds, ``trace_id``/``span_id`` the
record's own ids as bytes, ``resource`` the OTLP ``Resource`` attributes, and
every other field an attribute under ``kerno.audit.*`` (``details`` as a map).
:func:`rebuild_line` turns a received record back into the exact bytes of its
line: keys in :data:`kerno_otel.audit.chain.KEY_ORDER`, absent optional fields
absent, orjson-encoded as :meth:`kerno_otel.audit.chain.Chain.seal` writes them.

Where a value has no exact native form it still travels, under
``kerno.audit.<key>``: a ``ts`` that is not the writer's canonical 9-digit
form, ids that are not lowercase hex of the right length, a non-string
severity or type. JSON values map to ``AnyValue`` as: null -> an empty
``AnyValue``, bool, int (``int_value``), float (``double_value``, so ``1.0``
stays a float), string, list (``array_value``), object (``kvlist_value``, in
key order); an integer outside int64 travels as ``bytes_value`` holding its
decimal digits (JSON never yields bytes otherwise). A line that is not a JSON
object is forwarded as it is, as the string body of a ``kerno.audit.raw``
record, rather than held back forever.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from kerno_otel import __version__
from kerno_otel.audit.chain import KEY_ORDER, Timestamps, parse_ts

PREFIX: Final = "kerno.audit."
#: event_name of a line that is not a JSON object (its bytes are the body).
RAW_EVENT: Final = "kerno.audit.raw"
SCOPE_NAME: Final = "kerno_otel.audit"

#: OTel severity numbers of the severity texts the writer uses.
SEVERITY_NUMBER: Final = {
    "TRACE": 1,
    "DEBUG": 5,
    "INFO": 9,
    "WARN": 13,
    "ERROR": 17,
    "FATAL": 21,
}

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_HEX: Final = frozenset("0123456789abcdef")
#: Fields carried natively (not as kerno.audit.* attributes) when their value allows.
_NATIVE: Final = frozenset({"type", "ts", "severity", "resource", "trace_id", "span_id"})
_ts = Timestamps()


# -- the wire encoding -------------------------------------------------------------------------
#
# Requests are encoded straight to protobuf wire format: setting fields one by one
# through the Python protobuf API costs ~55 µs a record (a dozen nested values
# each), this ~10 µs. The tests parse every encoding back with the generated
# classes, so a wrong tag cannot pass unnoticed. Tags are (field << 3) | wire type
# per opentelemetry-proto's logs.proto and common.proto.

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_SMALL: Final = [bytes((n,)) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + payload


def _any(value: Any) -> bytes:
    """An ``AnyValue``'s bytes for a JSON value (see the module docstring for the mapping)."""
    kind = type(value)
    if kind is str:
        return _field(b"\x0a", value.encode("utf-8"))  # 1 string_value
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"  # 2 bool_value (a oneof: false is sent)
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # 3 int_value
        return _field(b"\x3a", str(value).encode("ascii"))  # 7 bytes_value: see above
    if kind is float:
        return b"\x21" + _pack_double(value)  # 4 double_value
    if value is None:
        return b""  # an empty AnyValue is null
    if kind is list:
        # 5 array_value { 1 values }
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any(v)) for v in value]))
    if kind is dict:
        return _field(b"\x32", _kvlist(value))  # 6 kvlist_value { 1 values }
    raise TypeError(f"not a JSON value: {kind.__name__}")


def _kv(key: str, value: Any) -> bytes:
    """A ``KeyValue``: 1 key, 2 value."""
    return _field(b"\x0a", key.encode("utf-8")) + _field(b"\x12", _any(value))


def _kvlist(mapping: dict[str, Any], prefix: str = "") -> bytes:
    """Repeated ``KeyValue`` as field 1 (of a KeyValueList, a Resource)."""
    return b"".join([_field(b"\x0a", _kv(prefix + k, v)) for k, v in mapping.items()])


def _value(value: AnyValue) -> Any:
    """The JSON value of an ``AnyValue`` (inverse of :func:`_set_value`)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "bytes_value":
        return int(value.bytes_value.decode("ascii"))
    return getattr(value, which)


def _is_hex(text: Any, length: int) -> bool:
    return type(text) is str and len(text) == length and _HEX.issuperset(text)


_seconds: dict[str, int] = {}


def _canonical_ts(ts: Any) -> int | None:
    """The nanoseconds of ``ts`` when formatting them back gives ``ts`` exactly, else None.

    The writer's form is ``YYYY-MM-DDTHH:MM:SS.<9 digits>Z``; the date part is
    parsed once per distinct second (strptime costs ~30 µs).
    """
    if type(ts) is not str or len(ts) != 30 or ts[19] != "." or ts[29] != "Z":
        return None
    frac = ts[20:29]
    if not frac.isdigit():
        return None
    prefix = ts[:19]
    seconds = _seconds.get(prefix)
    if seconds is None:
        try:
            seconds = parse_ts(prefix + "Z") // 1_000_000_000
        except ValueError:
            return None
        if seconds <= 0 or _ts.format(seconds * 1_000_000_000)[:19] != prefix:
            return None
        if len(_seconds) > 4096:
            _seconds.clear()
        _seconds[prefix] = seconds
    return seconds * 1_000_000_000 + int(frac)


def parse_line(line: bytes) -> Any:
    """The JSON value of a line, None when it is not JSON."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def resource_of(record: Any) -> Any:
    """A parsed line's ``resource`` (a dict), or :data:`ABSENT`."""
    resource = record.get("resource", ABSENT) if type(record) is dict else ABSENT
    return resource if type(resource) is dict else ABSENT


def encode_log_record(line: bytes, record: Any) -> bytes:
    """One ``LogRecord``'s bytes from an audit line (no ``\\n``) and its parsed value."""
    if type(record) is not dict:
        # 12 event_name, 5 body
        return _field(b"\x62", RAW_EVENT.encode()) + _field(
            b"\x2a", _any(line.decode("utf-8", "surrogateescape"))
        )
    head: list[bytes] = []
    attrs: list[bytes] = []
    for key, value in record.items():
        if key in _NATIVE:
            if key == "type" and type(value) is str:
                head.append(_field(b"\x62", value.encode("utf-8")))  # 12 event_name
                continue
            if key == "ts":
                ns = _canonical_ts(value)
                if ns is not None:
                    head.append(b"\x09" + _pack_fixed64(ns))  # 1 time_unix_nano
                    continue
            elif key == "severity" and type(value) is str and value:
                head.append(_field(b"\x1a", value.encode("utf-8")))  # 3 severity_text
                number = SEVERITY_NUMBER.get(value, 0)
                if number:
                    head.append(b"\x10" + _SMALL[number])  # 2 severity_number
                continue
            elif key == "resource" and type(value) is dict:
                continue
            elif key == "trace_id" and _is_hex(value, 32) and value != "0" * 32:
                head.append(_field(b"\x4a", bytes.fromhex(value)))  # 9 trace_id
                continue
            elif key == "span_id" and _is_hex(value, 16) and value != "0" * 16:
                head.append(_field(b"\x52", bytes.fromhex(value)))  # 10 span_id
                continue
        attrs.append(_field(b"\x32", _kv(PREFIX + key, value)))  # 6 attributes
    return b"".join(head) + b"".join(attrs)


class _Absent:
    """The resource of a record that has none (or whose ``resource`` is not an object)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()


_SCOPE: Final = _field(
    b"\x0a", _field(b"\x0a", SCOPE_NAME.encode()) + _field(b"\x12", __version__.encode())
)


def encode_request(lines: Iterable[bytes]) -> bytes:
    """One serialized ``ExportLogsServiceRequest`` for consecutive lines, in order.

    Consecutive records with the same ``resource`` share one ``ResourceLogs``
    (a daemon restart starts a new one: a new ``service.instance.id``).
    """
    groups: list[bytes] = []
    current: Any = None
    records: list[bytes] | None = None

    def close() -> None:
        if records is None:
            return
        # ResourceLogs { 1 resource { 1 attributes }, 2 scope_logs { 1 scope, 2 log_records } }
        resource = b"" if current is ABSENT else _field(b"\x0a", _kvlist(current))
        scope_logs = _field(b"\x12", _SCOPE + b"".join(records))
        groups.append(_field(b"\x0a", resource + scope_logs))  # request: 1 resource_logs

    for line in lines:
        record = parse_line(line)
        resource = resource_of(record)
        if records is None or resource != current:
            close()
            current, records = resource, []
        records.append(_field(b"\x12", encode_log_record(line, record)))
    close()
    return b"".join(groups)


def build_request(lines: Iterable[bytes]) -> ExportLogsServiceRequest:
    """:func:`encode_request` as a message object."""
    request = ExportLogsServiceRequest()
    request.ParseFromString(encode_request(lines))
    return request


def rebuild_line(record: LogRecord, resource: Sequence[KeyValue] | None) -> bytes:
    """The exact line (no ``\\n``) a received OTLP record was made from.

    ``resource`` is the attributes of its ``ResourceLogs``' resource, or None
    when that resource is not set (a record whose line had no ``resource``).
    """
    if record.event_name == RAW_EVENT:
        return record.body.string_value.encode("utf-8", "surrogateescape")
    fields: dict[str, Any] = {}
    for kv in record.attributes:
        if kv.key.startswith(PREFIX):
            fields[kv.key[len(PREFIX) :]] = _value(kv.value)
    if record.event_name:
        fields["type"] = record.event_name
    if record.time_unix_nano:
        fields["ts"] = _ts.format(record.time_unix_nano)
    if record.severity_text:
        fields["severity"] = record.severity_text
    if resource is not None:
        fields["resource"] = {kv.key: _value(kv.value) for kv in resource}
    if record.trace_id:
        fields["trace_id"] = record.trace_id.hex()
    if record.span_id:
        fields["span_id"] = record.span_id.hex()
    ordered: dict[str, Any] = {key: fields.pop(key) for key in KEY_ORDER if key in fields}
    ordered.update(fields)  # fields unknown to v1, after the known ones
    return orjson.dumps(ordered)


def rebuild_lines(request: ExportLogsServiceRequest) -> list[bytes]:
    """Every line of a received request, in order."""
    lines = []
    for group in request.resource_logs:
        resource = group.resource.attributes if group.HasField("resource") else None
        for scope in group.scope_logs:
            for record in scope.log_records:
                lines.append(rebuild_line(record, resource))
    return lines
