"""Writes tests/data/session-v2.db with the v2 code (commit e6a3835): a recording whose buffers are known from
iterator snapshots (one named, one unnamed) and from lifecycle events only (a short-lived one)."""
import sys

sys.path.insert(0, "/tmp/life/v2")
import os

from dmabuf_top.probes.hooks import State
from dmabuf_top.recording import session as s

MIB = 1 << 20
path = sys.argv[1]
if os.path.exists(path):
    os.unlink(path)
with s.SessionWriter(path) as w:
    w.set_metadata(argv=["dmabuf-top", "record", "--", "./load"], command=["./load"], interval_s=0.5,
                   target_pid=100)
    w.add(s.Hook("lifecycle_dma_buf_export", "lifecycle", State.LIVE, "tracepoint", "dma_buf:dma_buf_export"))
    w.add(s.LifecycleEvent(1_000, 11, "export", 100, "load", 16 * MIB))
    w.add(s.LifecycleEvent(1_100, 11, "fd", 100, "load", 16 * MIB, 3))
    w.add(s.BufferSnapshot(2_000, 11, "system", b"weights", 16 * MIB, 1, 0))
    w.add(s.BufferSnapshot(2_000, 10, "udmabuf", None, 4096, 1, 0, 77))
    w.add(s.LifecycleEvent(3_000, 12, "export", 100, "load", MIB))
    w.add(s.IoEvent(3_500, 400, 100, 100, "load", "read", 12, MIB))
    w.add(s.PathSample(4_000, 12, 0, "read", MIB, calls=1))
    w.add(s.LifecycleEvent(5_000, 12, "release", 100, "load", MIB))
    w.add(s.BufferSnapshot(6_000, 11, "system", b"weights", 16 * MIB, 1, 0))
