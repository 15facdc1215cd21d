"""Signed checkpoints: what is signed, how, and the ``<live>.checkpoints`` file they also go to.

A checkpoint states "stream S held line ``seq`` with hash H at time T", signed
with Ed25519. The signed message is :func:`message`: a fixed domain prefix and
the compact JSON of the five fields with sorted keys, so any implementation can
rebuild it from a checkpoint's ``details``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kerno_otel.audit.keys import key_id

#: Domain separation: a checkpoint signature can never be mistaken for another signed thing.
DOMAIN: Final = b"kerno-audit-checkpoint-v1\n"
ALGORITHM: Final = "ed25519"
SUFFIX: Final = ".checkpoints"


def message(stream: str, seq: int, hash: str, ts: str, key: str) -> bytes:
    """The exact bytes signed for one checkpoint."""
    fields = {"hash": hash, "key_id": key, "seq": seq, "stream": stream, "ts": ts}
    return DOMAIN + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def sidecar_path(live: Path) -> Path:
    """``<live>.checkpoints``: the checkpoints of ``live``'s stream, one JSON object a line."""
    return live.with_name(live.name + SUFFIX)


class Signer:
    """Signs checkpoints with one private key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.key_id = key_id(private.public_key())

    def sign(self, stream: str, seq: int, hash: str, ts: str) -> dict[str, Any]:
        """The ``details`` of an ``audit.checkpoint`` record (also its checkpoints-file line)."""
        signature = self._private.sign(message(stream, seq, hash, ts, self.key_id))
        return {
            "stream": stream,
            "seq": seq,
            "hash": hash,
            "ts": ts,
            "key_id": self.key_id,
            "algorithm": ALGORITHM,
            "signature": base64.b64encode(signature).decode("ascii"),
        }


def signature_ok(details: dict[str, Any], public: Ed25519PublicKey) -> bool:
    """True when ``details`` carries a valid signature by ``public`` over its own fields."""
    try:
        signed = message(
            str(details["stream"]),
            int(details["seq"]),
            str(details["hash"]),
            str(details["ts"]),
            str(details["key_id"]),
        )
        public.verify(base64.b64decode(details["signature"], validate=True), signed)
    except (KeyError, TypeError, ValueError, InvalidSignature):
        return False
    return True


def read_sidecar(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(line number, checkpoint or None when the line is not one) for each line of ``path``."""
    with open(path, "rb") as handle:
        for lineno, line in enumerate(handle, 1):
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield lineno, None
                continue
            yield lineno, item if isinstance(item, dict) else None
