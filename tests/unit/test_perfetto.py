"""The Perfetto/Chrome trace export passes the trace event format's checks."""
import io
import json
from collections import defaultdict

import pytest

from dmabuf_top.recording import session as s
from dmabuf_top.analysis.perfetto import BUFFER_PID_BASE, PerfettoRenderer
from dmabuf_top.recording.session import Session, SessionWriter

T0 = 5_000_000_000
REQUIRED = ("ph", "ts", "pid", "tid", "name")


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "t.session"
    writer = SessionWriter(path)
    writer.set_metadata(started_ns=T0)
    for step in range(3):
        writer.add(s.BufferSnapshot(T0 + step * 1000_000, 21, "system", b"\"}]\n<evil>", 4096 * (step + 1), 1, 0))
        writer.add(s.BufferSnapshot(T0 + step * 1000_000, 22, "udmabuf", None, 8192, 1, 0))
    writer.add(s.LifecycleEvent(T0 + 10, 21, "export", 300, "loader\x1b", 4096))
    # Written out of order on purpose: two threads, calls interleaved, the latest first.
    events = [(T0 + 900_000, 200_000, 300, 301, 21), (T0 + 300_000, 100_000, 300, 302, 22),
              (T0 + 500_000, 100_000, 300, 301, 21), (T0 + 400_000, 50_000, 400, 401, 0)]
    for end, duration, tgid, tid, inode in events:
        writer.add(s.IoEvent(end, duration, tgid, tid, "loader", "read", inode, 4096))
    writer.close(ended_ns=T0 + 1_000_000)
    out = io.StringIO()
    with Session(path) as session:
        PerfettoRenderer().render(session, out)
    return json.loads(out.getvalue())


def test_required_fields_and_phases(trace):
    events = trace["traceEvents"]
    for event in events:
        for field in REQUIRED:
            assert field in event, (field, event)
        assert event["ph"] in ("M", "X", "C", "i")
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
        if event["ph"] == "X":
            assert event["dur"] >= 0
    assert not [e for e in events if e["ph"] in ("B", "E")]  # nothing to balance: complete slices only


def test_slices_per_track_are_ordered_and_never_overlap(trace):
    tracks = defaultdict(list)
    for event in trace["traceEvents"]:
        if event["ph"] == "X":
            tracks[event["pid"], event["tid"]].append((event["ts"], event["ts"] + event["dur"]))
    assert len(tracks) == 3 + 2  # 3 threads, and 2 buffers' threads (21 by 301, 22 by 302)
    for slices in tracks.values():
        starts = [start for start, _ in slices]
        assert starts == sorted(starts)
        for (_, end), (next_start, _) in zip(slices, slices[1:]):
            assert end <= next_start


def test_counters_are_monotonic_and_carry_buffer_sizes(trace):
    counters = defaultdict(list)
    for event in trace["traceEvents"]:
        if event["ph"] == "C":
            counters[event["pid"], event["name"]].append((event["ts"], event["args"]["bytes"]))
    system = counters[BUFFER_PID_BASE, "size"]
    assert system == [(0.0, 4096), (1000.0, 8192), (2000.0, 12288)]
    for series in counters.values():
        assert [ts for ts, _ in series] == sorted(ts for ts, _ in series)


def test_tracks_are_named_per_buffer_and_process(trace):
    names = {(e["pid"]): e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert names[BUFFER_PID_BASE] == 'dma-buf 21 "}]\\n<evil> (system)'
    assert names[BUFFER_PID_BASE + 1] == "dma-buf 22 <unnamed> (udmabuf)"
    assert names[300] == "loader (300)" and names[400] == "loader (400)"
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["pid"] == 300]
    assert [(e["ts"], e["dur"]) for e in slices] == [(200.0, 100.0), (400.0, 100.0), (700.0, 200.0)]
