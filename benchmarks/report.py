"""Report speed: a session with 1,000,000 I/O events; prints the HTML report's time divided by the
time of one SQL pass over the same rows (every column of every io_events row read into Python).
Target: at most 20.

    .venv/bin/python benchmarks/report.py [--events N] [--keep PATH]
"""
import argparse
import io
import os
import random
import sys
import tempfile
import time

from dmabuf_top.recording import session as s
from dmabuf_top.analysis.html import HtmlRenderer
from dmabuf_top.recording.session import Session, SessionWriter

TARGET = 20.0
T0 = 10_000_000_000
PATHS = ("read", "write", "copy_file_range", "sendfile", "splice", "direct_io")


def build(path, events):
    rng = random.Random(6)
    writer = SessionWriter(path, overwrite=True, batch_rows=50_000)
    writer.set_metadata(command=["python3", "load_model.py"], started_ns=T0)
    buffers = [(1000 + i, "system" if i % 2 else "udmabuf", f"weights-{i}".encode(), (i + 1) << 20)
               for i in range(32)]
    span = 60_000_000_000
    for step in range(600):
        t = T0 + step * span // 600
        for inode, exporter, name, size in buffers[: 1 + step * len(buffers) // 600]:
            writer.add(s.BufferSnapshot(t, inode, exporter, name, size, 1, 0))
    for i in range(64):
        writer.add(s.Stack(i, "\n".join(f"fn_{i}_{depth}" for depth in range(12))))
    for i in range(events):
        inode = buffers[rng.randrange(len(buffers))][0] if rng.random() < 0.8 else 0
        writer.add(s.IoEvent(T0 + i * span // events, rng.randrange(1_000, 5_000_000), 100 + i % 4, 200 + i % 8,
                             "load", PATHS[i % len(PATHS)], inode, 1 << 20, 0, i % 64, 1 << 19, 0))
    writer.close("completed", 0, ended_ns=T0 + span)


def one_pass(path):
    with Session(path) as session:
        start = time.perf_counter()
        rows = 0
        for _ in session.iterate("SELECT * FROM io_events"):
            rows += 1
        return time.perf_counter() - start, rows


def report(path):
    with Session(path) as session:
        start = time.perf_counter()
        out = io.StringIO()
        HtmlRenderer().render(session, out)
        return time.perf_counter() - start, len(out.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", help="build the session here and keep it")
    args = parser.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(), "bench.session")
    start = time.perf_counter()
    build(path, args.events)
    print(f"built {args.events} I/O events in {time.perf_counter() - start:.1f} s ({os.path.getsize(path) >> 20} MiB)")
    pass_s, rows = min(one_pass(path) for _ in range(3))
    report_s, size = report(path)
    ratio = report_s / pass_s
    print(f"one SQL pass over {rows} rows: {pass_s:.3f} s; HTML report ({size >> 10} KiB): {report_s:.3f} s")
    print(f"report / pass = {ratio:.1f} (target <= {TARGET:g})")
    if not args.keep:
        os.unlink(path)
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
