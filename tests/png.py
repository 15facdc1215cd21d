"""Just enough of a PNG decoder to look at a screenshot's pixels (8-bit RGB or RGBA)."""

from __future__ import annotations

import struct
import zlib


def pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows) of an 8-bit RGB/RGBA, non-interlaced PNG; each row holds
    4-byte RGBA pixels."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, idat = 8, b""
    width = height = channels = 0
    while at < len(png):
        (size,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + size]
        at += 12 + size
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            channels = 4 if colour == 6 else 3
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        base = y * (stride + 1)
        kind = raw[base]
        row = bytearray(raw[base + 1 : base + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                row[i] = (row[i] + row[i - channels]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                row[i] = (row[i] + pred) & 0xFF
        previous = row
        if channels == 3:
            row = bytearray(b"".join(bytes(row[i : i + 3]) + b"\xff" for i in range(0, stride, 3)))
        rows.append(bytes(row))
    return width, height, rows


def colours(png: bytes) -> set[tuple[int, int, int]]:
    """Every RGB colour in the image."""
    _, _, rows = pixels(png)
    found: set[tuple[int, int, int]] = set()
    for row in rows:
        for i in range(0, len(row), 4):
            found.add((row[i], row[i + 1], row[i + 2]))
    return found
