"""Throughput figures: idle bins are zeros on one grid, and bins are never narrower than the sample interval."""
import pytest

from dmabuf_top.recording import session as s
from dmabuf_top.analysis import figures, tables
from dmabuf_top.recording.session import Session, SessionWriter

T0 = 1_000_000_000
MIB = 1 << 20


def test_dense_rates_fill_idle_bins_and_pad_lone_ones():
    series = {"read": [(0.15, 10.0), (0.45, 30.0)], "direct": [(0.45, 5.0)]}
    times, rates = figures.dense_rates(series, 0.1, ["read", "direct"])
    assert times == pytest.approx([0.05, 0.15, 0.25, 0.35, 0.45, 0.55])
    assert rates == [[0.0, 10.0, 0.0, 0.0, 30.0, 0.0], [0.0, 0.0, 0.0, 0.0, 5.0, 0.0]]
    assert figures.dense_rates({}, 0.1, []) == ([], [])


def test_bins_are_at_least_the_sample_interval(tmp_path):
    writer = SessionWriter(tmp_path / "t.session")
    writer.set_metadata(started_ns=T0, interval_s=0.5)
    for step in range(1, 5):  # one sample every 0.5 s, 1 MiB each
        writer.add(s.PathSample(T0 + step * 500_000_000, 0, 0, "read", MIB, 0, 0, 0, 1, 0))
    writer.close(ended_ns=T0 + 2_000_000_000)
    with Session(tmp_path / "t.session") as session:
        width, series = tables.throughput_series(session, by="path", bins=100)
        assert width == 0.5  # not 0.02: each bin holds one sample, no alternating empty bins
        assert sum(rate * width for _, rate in series["read"]) == pytest.approx(4 * MIB)
        assert tables.first_row_s(session) == 0.5
        figures.to_png(figures.throughput_by_path(session))
