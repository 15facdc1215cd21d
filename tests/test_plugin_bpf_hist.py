"""plugins/kerno_otel_plugins/bpf/_hist.py: the histogram layout bpf/kerno.h writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kerno_otel_plugins.bpf import _hist


def test_slot_bounds() -> None:
    assert [_hist.bounds(s) for s in range(4)] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert _hist.bounds(5) == (4, 4)  # 4-7 are unused: values 4-7 land in 8-11
    assert [_hist.bounds(s) for s in range(8, 12)] == [(4, 5), (5, 6), (6, 7), (7, 8)]
    assert _hist.bounds(4 * 20) == (1 << 20, 5 << 18)


@given(st.integers(min_value=0, max_value=(1 << 62)))
def test_every_value_falls_inside_its_slot(value: int) -> None:
    low, high = _hist.bounds(_hist.slot_of(value))
    assert low <= value < high


def test_percentile_interpolates_inside_the_slot() -> None:
    counts = [0] * _hist.SLOTS
    assert _hist.percentile(counts, 99) is None
    counts[_hist.slot_of(1_000_000)] = 99
    counts[_hist.slot_of(50_000_000)] = 1
    low, high = _hist.bounds(_hist.slot_of(1_000_000))
    assert low <= (_hist.percentile(counts, 50) or 0) < high
    assert _hist.percentile(counts, 99) == high
    p100 = _hist.percentile(counts, 100) or 0
    assert (
        _hist.bounds(_hist.slot_of(50_000_000))[0]
        < p100
        <= _hist.bounds(_hist.slot_of(50_000_000))[1]
    )


def test_delta() -> None:
    assert _hist.delta([1, 2, 3], [1, 5, 2]) == [0, 3, 0]
