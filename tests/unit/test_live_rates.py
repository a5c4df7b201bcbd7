import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_top.live.rates import RateTracker


def test_first_sample_has_no_rate():
    assert RateTracker().update(10.0, {"a": {"bytes": 100}}) == {}


def test_rate_uses_measured_elapsed_time_not_the_interval():
    tracker = RateTracker()
    tracker.update(10.0, {"a": {"bytes": 0}})
    # One "1 s" refresh that really took 2.5 s: 5 MB moved is 2 MB/s, not 5.
    assert tracker.update(12.5, {"a": {"bytes": 5_000_000}}) == {"a": {"bytes": pytest.approx(2_000_000)}}


def test_new_keys_wait_for_a_second_sample_and_gone_keys_disappear():
    tracker = RateTracker()
    tracker.update(0.0, {"old": {"bytes": 1}})
    assert tracker.update(1.0, {"new": {"bytes": 10}}) == {}
    assert tracker.update(2.0, {"new": {"bytes": 30}}) == {"new": {"bytes": 20.0}}


def test_a_counter_that_went_backwards_has_no_rate():
    tracker = RateTracker()
    tracker.update(0.0, {"a": {"bytes": 100, "calls": 1}})
    assert tracker.update(1.0, {"a": {"bytes": 10, "calls": 3}}) == {"a": {"calls": 2.0}}


def test_no_time_passed_gives_no_rate():
    tracker = RateTracker()
    tracker.update(5.0, {"a": {"bytes": 1}})
    assert tracker.update(5.0, {"a": {"bytes": 2}}) == {}


@given(st.lists(st.tuples(st.floats(0.001, 10), st.integers(0, 10**12)), min_size=2, max_size=20))
def test_rates_integrate_back_to_the_counter(steps):
    tracker = RateTracker()
    now, total, moved = 0.0, 0, 0.0
    tracker.update(now, {"k": {"bytes": total}})
    for gap, delta in steps:
        now += gap
        total += delta
        moved += tracker.update(now, {"k": {"bytes": total}})["k"]["bytes"] * gap
    assert moved == pytest.approx(total, rel=1e-6)
