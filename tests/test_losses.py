"""LostRanges: dropped seqs held until a loss record naming them is known to be in the file."""

from __future__ import annotations

from kerno_otel.audit.losses import LostRanges


def test_contiguous_drops_coalesce_into_one_range() -> None:
    lost = LostRanges()
    lost.add(5, 9)
    lost.add(10, 12)
    lost.add(20, 20)
    assert lost.unclaimed() == [(5, 12), (20, 20)]
    assert lost.pending_seqs() == 9


def test_a_claim_settles_once_its_loss_record_is_written() -> None:
    lost = LostRanges()
    lost.add(1, 4)
    lost.claim(1, 4, 5)  # the loss record is seq 5
    assert lost.unclaimed() == []
    lost.confirm(4)  # the writer is not done with seq 5 yet
    assert lost.pending_seqs() == 4
    lost.confirm(5)
    assert lost.pending_seqs() == 0


def test_a_dropped_loss_record_hands_its_range_back_merged_with_itself() -> None:
    lost = LostRanges()
    lost.add(1, 4)
    lost.claim(1, 4, 5)
    lost.add(5, 7)  # the loss record (5) was dropped with the two lines after it
    assert lost.unclaimed() == [(1, 7)]
    lost.claim(1, 7, 8)
    lost.confirm(8)
    assert (lost.unclaimed(), lost.pending_seqs()) == ([], 0)
