"""A ring buffer read with a limit stops there, even while producers keep writing (issue 9: a recorder
slower than the churn drained forever, its list of records growing: the RSS leak of the 10-minute soak)."""
import os

import pytest

from dmabuf_top import bpf
from dmabuf_top.probes import object_path
from dmabuf_top.probes.tracer import Tracer

pytestmark = pytest.mark.root


def round_trip_object(tgid):
    obj = bpf.BpfObject(object_path("feature_probe"))
    obj.only("trial_round_trip")
    obj.set_rodata(trial_target_tgid=tgid)  # a record per getppid() of that process
    obj.load()
    obj.program("trial_round_trip").attach()
    return obj


def test_poll_and_consume_stop_at_the_limit_and_leave_the_rest():
    with round_trip_object(os.getpid()) as obj:
        seen = []
        with bpf.RingBuffer(obj.map("trial_ringbuf"), seen.append) as ring:
            for _ in range(50):
                os.getppid()
            assert ring.poll(timeout_ms=200, limit=20) == 20 and len(seen) == 20
            assert ring.consume(limit=20) == 20 and len(seen) == 40
            assert ring.consume(limit=20) == 10 and len(seen) == 50
            assert ring.consume() == 0
            with pytest.raises(ValueError):
                ring.consume(limit=0)


def test_a_limited_poll_returns_while_the_producer_never_pauses():
    # Each record consumed makes a new one (the callback calls getppid): a ring that is never empty,
    # as under churn with a reader slower than the writers. Unlimited, libbpf would go on for ever;
    # the callback gives up after 100,000 so the test fails instead of hanging.
    with round_trip_object(os.getpid()) as obj:
        seen = []

        def consume_and_produce(record):
            if len(seen) >= 100_000:
                raise RuntimeError("the poll did not stop at its limit")
            seen.append(record)
            os.getppid()

        with bpf.RingBuffer(obj.map("trial_ringbuf"), consume_and_produce) as ring:
            os.getppid()
            assert ring.poll(timeout_ms=200, limit=5000) == 5000
            assert len(seen) == 5000
            assert ring.consume(limit=3) == 3  # and the ring still holds the next one


def test_tracer_drain_is_bounded_by_max_records(tmp_path):
    path = tmp_path / "small"
    path.write_bytes(b"x" * 64)
    fd = os.open(path, os.O_RDONLY)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, record=True) as tracer:
            # Each ring full of its smallest records (iopaths: 104 bytes + header; lifecycle: 152 + header)
            assert tracer.ring_capacity == (1 << 20) // 112 + (1 << 20) // 160
            for _ in range(300):
                os.pread(fd, 13, 0)  # 13 bytes: this test's calls among whatever else this process reads
            first = tracer.drain_records(max_records=100)
            rest = tracer.drain_records()
            dropped = tracer.dropped()
    finally:
        os.close(fd)
    assert len(first) == 100 and dropped == 0
    assert len([r for r in first + rest if getattr(r, "requested", None) == 13]) == 300
