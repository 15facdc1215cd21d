"""``audit bundle`` / ``audit verify BUNDLE.tar.gz``: evidence a reviewer checks elsewhere.

A bundle is a gzipped tar made the same way every time (members in a fixed order,
mode 0644, owner 0, mtime 0; gzip header with mtime 0), holding::

    logs/           the log files as they are (plain or .gz) and each stream's .checkpoints
    key/public.pem  the checkpoint public key
    schemas/kerno-audit/v1/   the published schema set (plugins' types included)
    report.json, report.html  ``audit report`` of the logs above
    README.txt      how to check it by hand
    SHA256SUMS      a SHA-256 per file (``sha256sum -c SHA256SUMS`` reads it)

Checking reads the bundle as it is: the gzip stream is decoded in full (its CRC
covers every byte of the tar) and the members are taken from memory, never
extracted by ``tarfile``: only regular files with plain relative names are
accepted (no links, devices, absolute paths or ``..``) and written, 0600, with
``O_EXCL|O_NOFOLLOW`` into a fresh private directory. A damaged byte is named by
the member it falls in: through the digest of that member, or, when the gzip data
itself no longer decodes, by the member being decoded at that point. A bundle
repacked by another gzip is still read (its header is the problem), so that a file
changed inside is named too.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

MANIFEST: Final = "SHA256SUMS"
KEY_MEMBER: Final = "key/public.pem"
# FLG: a comment only (FCOMMENT); mtime 0; XFL 0; OS unknown. The comment carries the
# SHA-256 of everything after it, so a byte the decoder would ignore (the padding bits
# at the end of the deflate data) is still caught.
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff"
_COMMENT: Final = b"kerno-otel bundle sha256:"
_PREFIX_LEN: Final = len(_GZIP_HEADER) + len(_COMMENT) + 64 + 1
_SUM_LINE: Final = re.compile(r"^([0-9a-f]{64})  ([A-Za-z0-9._/+-]+)$")
_README: Final = """kerno-otel evidence bundle

Check it, offline, where kerno-otel is installed (pip install kerno-otel):

    kerno-otel audit verify THIS-FILE.tar.gz

That checks every file against SHA256SUMS, then the log's hash chain, seq,
checkpoint signatures (key/public.pem: compare its key id with the one you were
given) and truncation, and that report.json is the report of these logs.
By hand: tar xzf THIS-FILE.tar.gz && sha256sum -c SHA256SUMS
Open report.html in any browser: it loads nothing from the network.
"""


class BundleError(ValueError):
    """The bundle cannot be made (a usage problem); the message says why."""


@dataclass
class Member:
    name: str
    data: bytes


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def manifest(members: list[Member]) -> bytes:
    return "".join(f"{hashlib.sha256(m.data).hexdigest()}  {m.name}\n" for m in members).encode()


def write(out: Path, members: list[Member]) -> None:
    """Write ``members`` and their SHA256SUMS as a bundle at ``out`` (atomically, 0600)."""
    everything = [*members, Member("README.txt", _README.encode())]
    everything.append(Member(MANIFEST, manifest(everything)))
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in everything:
            tar.addfile(_tar_info(m.name, len(m.data)), io.BytesIO(m.data))
    packed = gzip_bytes(tar_bytes.getvalue())
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(packed)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


def gzip_bytes(raw: bytes) -> bytes:
    """``raw`` gzipped the one way bundles are: fixed header (no name, mtime 0), level 6."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = packer.compress(raw) + packer.flush()
    trailer = zlib.crc32(raw).to_bytes(4, "little") + (len(raw) & 0xFFFFFFFF).to_bytes(4, "little")
    digest = hashlib.sha256(body + trailer).hexdigest().encode()
    return _GZIP_HEADER + _COMMENT + digest + b"\0" + body + trailer


@dataclass
class Opened:
    """A bundle read back: where its files now are, and what is wrong with it."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _decode(raw: bytes) -> tuple[bytes, str | None]:
    """The tar bytes, and why the gzip layer is damaged (None when it is not)."""
    header_problem = None
    comment = raw[len(_GZIP_HEADER) : _PREFIX_LEN]
    if raw[: len(_GZIP_HEADER)] != _GZIP_HEADER or not (
        comment.startswith(_COMMENT) and comment.endswith(b"\0")
    ):
        header_problem = "the gzip header is not the one kerno-otel writes (modified)"
    elif comment[len(_COMMENT) : -1] != hashlib.sha256(raw[_PREFIX_LEN:]).hexdigest().encode():
        header_problem = "its bytes differ from the SHA-256 it was written with (modified)"
    data, problem = _inflate(raw)
    if problem is not None and header_problem is not None and raw[:2] == b"\x1f\x8b":
        # Repacked by another gzip (``tar czf``): still read it, so that what was
        # changed inside is named by SHA256SUMS, beside the header problem.
        try:
            return gzip.decompress(raw), header_problem
        except (OSError, EOFError, zlib.error):
            pass
    return data, problem or header_problem


def _inflate(raw: bytes) -> tuple[bytes, str | None]:
    inflate = zlib.decompressobj(-15)
    body = raw[_PREFIX_LEN:]
    try:
        data = inflate.decompress(body)
        data += inflate.flush()
    except zlib.error as e:
        return inflate_partial(body), f"the compressed data is damaged ({e})"
    if not inflate.eof:
        return data, "cut short (the compressed data does not end)"
    trailer = inflate.unused_data
    if len(trailer) != 8:
        return data, "bytes after the end of the compressed data (modified)"
    if trailer != zlib.crc32(data).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(
        4, "little"
    ):
        return data, "the gzip checksum does not match its content (modified)"
    return data, None


def inflate_partial(body: bytes) -> bytes:
    """What decodes of damaged deflate data, up to the damage (to name the member)."""
    inflate = zlib.decompressobj(-15)
    out = bytearray()
    step = 512
    for i in range(0, len(body), step):
        try:
            out += inflate.decompress(body[i : i + step])
        except zlib.error:
            break
    return bytes(out)


def _member_at(data: bytes, offset: int) -> str | None:
    """The tar member whose header or content holds byte ``offset`` of the tar."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if info.offset <= offset < info.offset_data + max(info.size, 1) + 511:
                    return info.name
    except (tarfile.TarError, EOFError, OSError):
        pass
    return None


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return (
        bool(name)
        and not path.is_absolute()
        and ".." not in path.parts
        and "\\" not in name
        and all(part not in ("", ".") for part in name.split("/"))
    )


def open_bundle(bundle: Path, into: Path) -> Opened:
    """Check the bundle's layers and files, and write them under ``into`` (a new directory)."""
    name = str(bundle)
    opened = Opened(into)
    raw = bundle.read_bytes()
    data, gzip_problem = _decode(raw)
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    kind = "a link" if info.issym() or info.islnk() else "not a regular file"
                    if not info.isdir():
                        opened.problems.append(f"{name}: {info.name}: {kind}: refused")
                    continue
                if not _safe_name(info.name) or info.name in members:
                    opened.problems.append(f"{name}: {info.name!r}: unsafe or repeated name")
                    continue
                extracted = tar.extractfile(info)
                members[info.name] = extracted.read() if extracted is not None else b""
    except (tarfile.TarError, EOFError, OSError) as e:
        if gzip_problem is None:
            opened.problems.append(f"{name}: not a readable tar archive ({e})")
    if gzip_problem is not None:
        where = _member_at(data, len(data)) if "damaged" in gzip_problem else None
        inside = f" (in {where})" if where else ""
        opened.problems.append(f"{name}{inside}: {gzip_problem}")
    if not members:
        opened.problems.append(f"{name}: no file could be read from it")
        return opened
    _check_manifest(members, opened)
    _extract(members, into)
    opened.files = sorted(members)
    return opened


def _check_manifest(members: dict[str, bytes], opened: Opened) -> None:
    sums = members.get(MANIFEST)
    if sums is None:
        opened.problems.append(f"{MANIFEST}: missing from the bundle")
        return
    listed: dict[str, str] = {}
    text = sums.decode("utf-8", "replace")
    for lineno, line in enumerate(text.removesuffix("\n").split("\n"), 1):
        m = _SUM_LINE.match(line)
        if m is None:
            opened.problems.append(f"{MANIFEST}:{lineno}: not a '<sha256>  <file>' line")
            continue
        listed[m.group(2)] = m.group(1)
    if not text.endswith("\n"):
        opened.problems.append(f"{MANIFEST}: its last line does not end (modified)")
    for member, digest in listed.items():
        content = members.get(member)
        if content is None:
            opened.problems.append(f"{member}: listed in {MANIFEST} but missing from the bundle")
        elif hashlib.sha256(content).hexdigest() != digest:
            opened.problems.append(
                f"{member}: modified (its SHA-256 differs from the one in {MANIFEST})"
            )
    for member in members:
        if member != MANIFEST and member not in listed:
            opened.problems.append(f"{member}: not listed in {MANIFEST} (added)")


def _extract(members: dict[str, bytes], into: Path) -> None:
    for member, content in members.items():
        target = into.joinpath(*member.split("/"))
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)


def private_directory() -> tempfile.TemporaryDirectory[str]:
    """A fresh 0700 directory for a bundle's files, removed afterwards."""
    return tempfile.TemporaryDirectory(prefix="kerno-bundle-")


def relative(value: object, root: str) -> object:
    """``value`` (JSON-like) with ``root/`` cut from the front of every string."""
    prefix = root.rstrip("/") + "/"
    if isinstance(value, str):
        return value.replace(prefix, "")
    if isinstance(value, list):
        return [relative(v, root) for v in value]
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    return value
