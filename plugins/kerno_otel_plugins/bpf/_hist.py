"""The programs' latency histograms: slot bounds and percentiles (bpf/kerno.h's layout)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

#: Slots per histogram: values 0-3 exactly, then four slots per power of two.
SLOTS: Final = 256


def bounds(slot: int) -> tuple[int, int]:
    """[low, high) of the values slot ``slot`` counts (nanoseconds)."""
    if slot < 4:
        return slot, slot + 1
    if slot < 8:  # unused: 4-7 are counted from slot 8 on
        return 4, 4
    power, quarter = divmod(slot, 4)
    return (4 + quarter) << (power - 2), (5 + quarter) << (power - 2)


def slot_of(value: int) -> int:
    """The slot ``value`` falls in (what the kernel side computes)."""
    if value < 4:
        return value
    power = value.bit_length() - 1
    return min(power * 4 + ((value >> (power - 2)) & 3), SLOTS - 1)


def delta(first: Sequence[int], last: Sequence[int]) -> list[int]:
    """Counts of a window from two cumulative histograms."""
    return [max(b - a, 0) for a, b in zip(first, last, strict=True)]


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The ``q``-th percentile, interpolated inside its slot; None when nothing was counted."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q / 100.0 * total
    seen = 0
    for slot, n in enumerate(counts):
        if n and seen + n >= rank:
            low, high = bounds(slot)
            return low + (high - low) * max(rank - seen, 0.0) / n
        seen += n
    low, high = bounds(len(counts) - 1)
    return float(high)
