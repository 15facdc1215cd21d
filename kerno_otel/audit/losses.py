"""Seq ranges the writer dropped (``on_write_error: drop``), held until a loss record names them."""

from __future__ import annotations


class LostRanges:
    """Seq ranges the writer dropped, each either waiting for a loss record or claimed by one.

    A claim is settled once the writer is done with its loss record's line and
    that line was not dropped; a dropped one hands its range back, merged with
    its own seq (the ranges are contiguous), to be claimed again.
    """

    def __init__(self) -> None:
        self._open: list[tuple[int, int]] = []  # (first, last), waiting for a loss record
        self._claims: list[tuple[int, int, int]] = []  # (first, last, seq of its loss record)

    def add(self, first: int, last: int) -> None:
        """Seqs ``first``..``last`` were dropped (possibly loss records claiming ranges)."""
        ranges = [(first, last)]
        for claim in list(self._claims):
            if first <= claim[2] <= last:
                self._claims.remove(claim)
                ranges.append((claim[0], claim[1]))
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted([*self._open, *ranges]):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self._open = merged

    def confirm(self, done: int) -> None:
        """The writer is done with every line up to seq ``done`` (its drops already added)."""
        self._claims = [claim for claim in self._claims if claim[2] > done]

    def unclaimed(self) -> list[tuple[int, int]]:
        return list(self._open)

    def claim(self, first: int, last: int, seq: int) -> None:
        """The loss record for ``first``..``last`` is the line at ``seq``."""
        self._open.remove((first, last))
        self._claims.append((first, last, seq))

    def pending_seqs(self) -> int:
        """Seqs dropped and not yet named by a loss record known to be in the file."""
        return sum(hi - lo + 1 for lo, hi, *_ in [*self._open, *self._claims])
