"""A session as a Chrome trace event JSON file, which ui.perfetto.dev and chrome://tracing open.

Layout (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU):
- one process per traced process (pid = tgid, named by its comm), one thread per tid;
  each I/O call is an "X" (complete) slice named by its path, args: bytes, inode, errno;
- one process per dma-buf ("dma-buf <inode> <name>", pid = BUFFER_PID_BASE + n): a "C"
  counter "size" from the buffer snapshots, its lifecycle events as "i" instants, and the
  I/O calls that touched it as X slices on one thread per tid;
- timestamps in microseconds since the session start (CLOCK_MONOTONIC), emitted in order.
The file is streamed: a million I/O events never sit in memory as dicts.
"""
import json

from ..text import terminal_safe
from . import tables
from .renderers import FORMATS, Renderer

BUFFER_PID_BASE = 1 << 30


def _ts(ns, t0):
    return round((ns - t0) / 1000.0, 3)


class PerfettoRenderer(Renderer):
    """Chrome trace event JSON."""

    format = FORMATS["perfetto"]

    def render(self, session, out):
        t0 = tables.start_ns(session)
        out.write('{"displayTimeUnit": "ns", "otherData": ')
        out.write(json.dumps({"tool": "dmabuf-top", "end_reason": session.end_reason,
                              "kernel": (session.metadata.get("kernel") or {}).get("release")
                              if isinstance(session.metadata.get("kernel"), dict) else None}))
        out.write(', "traceEvents": [\n')
        first = [True]

        def emit(event):
            if not first[0]:
                out.write(",\n")
            first[0] = False
            out.write(json.dumps(event, separators=(",", ":")))

        buffer_pid = {}
        for index, (inode, name, exporter) in enumerate(session.iterate(
                "SELECT inode, name, exporter FROM buffer_snapshots WHERE rowid IN "
                "(SELECT max(rowid) FROM buffer_snapshots GROUP BY inode) ORDER BY inode")):
            pid = BUFFER_PID_BASE + index
            buffer_pid[inode] = pid
            label = f"dma-buf {inode} {terminal_safe(bytes(name) if name is not None else None)} ({exporter})"
            emit({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": 0, "args": {"name": label}})
            emit({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "ts": 0,
                  "args": {"sort_index": index}})

        for tgid, comm in session.iterate(
                "SELECT tgid, comm FROM (SELECT tgid, comm FROM io_events UNION ALL SELECT tgid, comm "
                "FROM lifecycle_events UNION ALL SELECT tgid, comm FROM taskstats) GROUP BY tgid"):
            emit({"ph": "M", "name": "process_name", "pid": tgid, "tid": 0, "ts": 0,
                  "args": {"name": f"{terminal_safe(comm)} ({tgid})"}})

        for time_ns, inode, size in session.iterate(
                "SELECT time_ns, inode, size FROM buffer_snapshots ORDER BY time_ns, inode"):
            emit({"ph": "C", "name": "size", "pid": buffer_pid[inode], "tid": 0, "ts": _ts(time_ns, t0),
                  "args": {"bytes": size}})

        for time_ns, inode, event, tgid, comm, size in session.iterate(
                "SELECT time_ns, inode, event, tgid, comm, size FROM lifecycle_events ORDER BY time_ns"):
            pid = buffer_pid.get(inode)
            args = {"inode": inode, "tgid": tgid, "comm": terminal_safe(comm), "size": size}
            if pid is not None:
                emit({"ph": "i", "s": "t", "name": event, "pid": pid, "tid": 0, "ts": _ts(time_ns, t0), "args": args})
            emit({"ph": "i", "s": "t", "name": f"dma-buf {event}", "pid": tgid, "tid": tgid,
                  "ts": _ts(time_ns, t0), "args": args})

        for time_ns, duration, tgid, tid, path, inode, moved, errno in session.iterate(
                "SELECT time_ns, duration_ns, tgid, tid, path, inode, bytes, errno FROM io_events "
                "ORDER BY time_ns - duration_ns, tid"):
            start = _ts(time_ns - duration, t0)
            dur = round(duration / 1000.0, 3)
            args = {"bytes": moved, "inode": inode, "errno": errno}
            emit({"ph": "X", "name": path, "cat": "io", "pid": tgid, "tid": tid, "ts": start, "dur": dur,
                  "args": args})
            pid = buffer_pid.get(inode)
            if pid is not None:
                emit({"ph": "X", "name": path, "cat": "io", "pid": pid, "tid": tid, "ts": start, "dur": dur,
                      "args": args})
        out.write("\n]}\n")
