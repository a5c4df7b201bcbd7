"""The session `validate --record` writes, read back by the report as a user sees it.

The run is built the way runner.Runner builds one (times from CLOCK_MONOTONIC, per-path
Counters.to_dict() with the kernel's latency histograms, the kernel's dma-buf list after
allocating and after the I/O), recorded with store.record_run a while after the methods
ran, as `make demo` does; every number below follows from those inputs.
"""
import csv
import io
import json

import pytest

from dmabuf_top.analysis import export, flame, html, tables
from dmabuf_top.analysis.renderers import RenderOptions
from dmabuf_top.probes.iopaths import Counters
from dmabuf_top.recording.session import BufferSnapshot, PathSample, Session
from dmabuf_top.stacks import kernel_frames
from dmabuf_top.probes.hooks import HookState, State
from dmabuf_top.validate import runner
from dmabuf_top.validate.store import record_run
from dmabuf_top.validate.verdict import Verdict, absent

MiB = 1 << 20
SIZE = 64 * MiB
S = 1_000_000_000
SOURCE = runner.SourceFile("/mnt/scratch/f.bin", SIZE, "d", "ext4")
RAW_STACK = ["bpf_prog_ee66dee7d5b81a41_copy_filemap_read", "bpf_trampoline_6442529929", "ext4_file_read_iter",
             "vfs_read", "ksys_read"]


def hist(**buckets):
    out = [0] * 32
    for name, count in buckets.items():
        out[int(name[1:])] = count
    return out


def method(name, buffer, start_s, io_s, close_s, *, inode, paths, snapshots=(), verdict=None, **values):
    """A method that allocated at start_s, did its I/O for io_s seconds from start_s + 0.2 and closed close_s later."""
    result = runner.MethodResult(name, f"summary of {name}", buffer, False, SIZE,
                                 verdict or Verdict("copies", "1 copy, via page cache", 1.0))
    result.started_ns = int(start_s * S)
    result.io_started_ns = result.started_ns + S // 5
    result.ended_ns = result.io_started_ns + int(io_s * S)
    result.closed_ns = result.ended_ns + int(close_s * S)
    result.alloc_ms, result.io_ms, result.close_ms = 200.0, io_s * 1000, close_s * 1000
    result.moved = result.reached = SIZE
    result.buffer_inode, result.checksum = inode, "ok"
    result.paths = {path: counters.to_dict() | {"latency_hist_us_log2": h} for path, (counters, h) in paths.items()}
    result.syscalls = sum(c.calls for c, _ in paths.values())
    result.cpu_copied = sum(c.cpu_copied for c, _ in paths.values())
    result.page_cache_pages = sum(c.pc_added for c, _ in paths.values())
    result.pinned_pages = sum(c.pinned_pages for c, _ in paths.values())
    result.snapshots = [BufferSnapshot(t, *snapshot) for snapshot in snapshots
                        for t in (result.started_ns + S // 10, result.ended_ns + S // 10)]
    if snapshots:  # the pass after the close found none of the method's dma-bufs: no row, only its time
        result.inventory_passes = [result.started_ns + S // 10, result.ended_ns + S // 10, result.closed_ns + S // 20]
    for key, value in values.items():
        setattr(result, key, value)
    return result


def never_ran(name, buffer, why):
    result = runner.MethodResult(name, f"summary of {name}", buffer, False, SIZE, absent(why))
    return runner._unmeasured(result)


def sample_run():
    heap_read = method(
        "heap-read", "heap", 48.5, 0.4, 0.07, inode=7,
        paths={"read": (Counters(calls=2, bytes=SIZE, cpu_copied=SIZE, pc_added=16384), hist(b17=2))},
        snapshots=[(7, "system", b"validate:heap", SIZE, 2, 0, 0)],
        evidence=[{"stack_id": 5, "point": "cpu_copy_read", "path": "read", "hits": 2, "amount": SIZE,
                   "unit": "bytes", "frames": RAW_STACK}])
    udmabuf_direct = method(
        "udmabuf-read-direct", "udmabuf", 55.0, 0.13, 1.05, inode=14,
        paths={"read": (Counters(calls=2, bytes=SIZE, pinned_pages=16384), hist(b15=1, b16=1))},
        snapshots=[(14, "udmabuf", None, SIZE, 1, 0, 1058)], verdict=Verdict("zero-copy", "zero-copy", 0.0))
    memfd_rw = method(  # the longest I/O of the run: 4 s of a 44 s session
        "memfd-rw", "memfd", 74.0, 4.0, 0.27, inode=1058,
        paths={"read": (Counters(calls=2, bytes=SIZE, cpu_copied=SIZE, pc_added=16384), hist(b20=1, b21=1)),
               "write": (Counters(calls=2, bytes=SIZE, cpu_copied=SIZE), hist(b18=1, b19=1))})
    memfd_rw.cpu_copied = 2 * SIZE
    last = method("memfd-read", "memfd", 90.0, 2.3, 0.3, inode=1059,
                  paths={"read": (Counters(calls=2, bytes=SIZE, cpu_copied=SIZE, pc_added=16384), hist(b18=2))})
    return runner.ValidateRun(
        [heap_read, udmabuf_direct, memfd_rw, never_ran("heap-rwfile-ioctl", "heap", "absent on this kernel"), last],
        SOURCE, False, [HookState("copy_filemap_read", "cpu_copy", "filemap_read", State.LIVE, "fentry", "ok")], {},
        {5: RAW_STACK}, kernel={"release": "7.2.13-cloud-amd64", "machine": "x86_64"})


FIRST_START_NS = 48_500_000_000
LAST_END_NS = 90_000_000_000 + S // 5 + int(2.3 * S) + int(0.3 * S)


def recorded(tmp_path):
    path = tmp_path / "v.session"
    record_run(sample_run(), str(path))  # now: long after the methods' CLOCK_MONOTONIC times
    return Session(str(path))


def rendered(session):
    out = io.StringIO()
    html.HtmlRenderer().render(session, out)
    return out.getvalue()


def section(page, key):
    start = page.index(f'<section id="{key}">')
    return page[start:page.index("</section>", start)]


def test_the_session_spans_the_methods_not_the_writing_of_the_file(tmp_path):
    with recorded(tmp_path) as session:
        assert session.metadata["started_ns"] == FIRST_START_NS
        assert session.metadata["ended_ns"] == LAST_END_NS
        summary = tables.summary(session)
        assert summary["duration_s"] == (LAST_END_NS - FIRST_START_NS) / S
        assert summary["kernel"] == "7.2.13-cloud-amd64"
        assert summary["buffers_seen"] == 2  # the heap dma-buf and the udmabuf; the memfds are no dma-bufs
        assert summary["calls"] == 2 + 2 + 4 + 2
        assert summary["io_events"] is None  # validate keeps no per-call events: not "0 events"
        assert summary["bytes_moved"] == 5 * SIZE
        (first, last), = session.query("SELECT min(time_ns), max(time_ns) FROM path_samples")
        assert FIRST_START_NS <= first and last <= LAST_END_NS
        page = section(rendered(session), "summary")
    assert "<td>duration</td><td>44.30 s</td>" in page
    assert "7.2.13-cloud-amd64" in page and "not recorded" in page


def test_the_session_holds_what_was_measured_and_nothing_else(tmp_path):
    with recorded(tmp_path) as session:
        assert "validate" not in session.metadata  # v1's JSON blob
        methods = session.query("SELECT name, buffer, buffer_inode, io_started_ns, io_ended_ns, calls, cpu_copied, "
                                "verdict FROM methods ORDER BY rowid")
        assert [row[:3] for row in methods] == [("heap-read", "heap", 7), ("udmabuf-read-direct", "udmabuf", 14),
                                                ("memfd-rw", "memfd", 1058), ("heap-rwfile-ioctl", "heap", 0),
                                                ("memfd-read", "memfd", 1059)]
        assert methods[2][3:] == (74_200_000_000, 78_200_000_000, 4, 2 * SIZE, "copies")
        assert methods[3][3:] == (0, 0, None, None, "absent")  # never ran: nothing measured, not zeros
        # One row per method and path, at the end of the method's I/O window, with the totals measured there.
        samples = session.query("SELECT m.name, p.path, p.time_ns, p.bytes, p.calls FROM path_samples p JOIN methods m "
                                "ON p.inode = m.buffer_inode AND p.time_ns = m.io_ended_ns ORDER BY m.rowid, p.path")
        assert [(name, path, moved, calls) for name, path, _, moved, calls in samples] == [
            ("heap-read", "read", SIZE, 2), ("udmabuf-read-direct", "read", SIZE, 2), ("memfd-rw", "read", SIZE, 2),
            ("memfd-rw", "write", SIZE, 2), ("memfd-read", "read", SIZE, 2)]
        assert session.count(PathSample) == len(samples)


def test_throughput_shows_each_method_at_its_average_rate_where_it_ran(tmp_path):
    with recorded(tmp_path) as session:
        width, series = tables.throughput_series(session, by="path")
        assert sum(rate * width for points in series.values() for _, rate in points) == 5 * SIZE
        # memfd-rw read for 4 s from 74.2 s: every bin wholly inside that window shows SIZE / 4 s on read
        # (the other read methods are outside it).
        inside = [rate for t, rate in series["read"] if 74.2 - 48.5 + width < t < 78.2 - 48.5 - width]
        assert len(inside) >= 5 and all(rate == pytest.approx(SIZE / 4, rel=0.02) for rate in inside)
        by_buffer = tables.throughput_series(session, by="buffer")[1]
        assert set(by_buffer) == {7, 14, 1058, 1059}
        assert tables.path_totals(session)[0].bytes == 4 * SIZE  # read: every method's payload, exactly


def test_latency_comes_from_the_kernels_histograms(tmp_path):
    with recorded(tmp_path) as session:
        rows = {row.path: row for row in tables.latency_table(session)}
        assert rows["read"].calls == 2 + 2 + 2 + 2 and rows["write"].calls == 2
        assert rows["write"].max_bucket == 19
        page = section(rendered(session), "latency")
    assert "no latency recorded" not in page and "<td>read</td><td class=\"n\">8</td>" in page


def test_buffers_are_the_methods_dmabufs_and_the_memfd_methods_are_said_to_have_none(tmp_path):
    with recorded(tmp_path) as session:
        buffers = {b.inode: b for b in tables.top_buffers(session)}
        assert set(buffers) == {7, 14}
        assert (buffers[7].exporter, buffers[7].name, buffers[7].size, buffers[7].io_bytes) == (
            "system", b"validate:heap", SIZE, SIZE)
        assert (buffers[7].first_seen_s, buffers[7].last_seen_s) == pytest.approx((0.1, 0.2 + 0.4 + 0.1))
        over_time = tables.buffers_over_time(session)
        assert set(over_time) == {"system", "udmabuf"}
        # The heap buffer from its allocation to its close (0.67 s after the session began; the pass after it at 0.72 s), not until the
        # udmabuf method's first pass 6.6 s later.
        assert [(round(t, 6), n, size) for t, n, size in over_time["system"][:4]] == [
            (0.1, 1, SIZE), (0.7, 1, SIZE), (0.72, 0, 0), (6.6, 0, 0)]
        assert [n for _, n, _ in over_time["udmabuf"]] == [0, 0, 0, 1, 1, 0]
        page = rendered(session)
    top = section(page, "top-buffers")
    assert "validate:heap" in top and "<td>udmabuf</td>" in top
    assert "memfd-rw, memfd-read load into a memfd, which is no dma-buf" in top and "these methods have none" in top
    assert "no buffer snapshot recorded" not in section(page, "buffers-over-time")


def test_a_method_that_did_not_run_shows_dashes_and_exports_nulls(tmp_path):
    with recorded(tmp_path) as session:
        page = section(rendered(session), "methods")
        data = export.tables_dict(session)
        out = io.StringIO()
        export.CsvRenderer(RenderOptions(table="methods")).render(session, out)
    row = page[page.index("<td>heap-rwfile-ioctl</td>"):]
    cells = row[:row.index("</tr>")].split("</td>")
    # alloc, I/O, close ms, MB/s, CPU-copied, page cache, pinned, calls, data: nothing measured
    assert [cell.rsplit(">", 1)[-1] for cell in cells[2:11]] == ["-"] * 9
    absent_row = next(m for m in data["methods"] if m["name"] == "heap-rwfile-ioctl")
    unmeasured = ("cpu_copied", "page_cache_pages", "pinned_pages", "syscalls", "moved")
    assert [absent_row[k] for k in unmeasured] == [None] * len(unmeasured)
    assert next(m for m in data["methods"] if m["name"] == "heap-read")["cpu_copied"] == SIZE
    json.dumps(data)
    table = {r["name"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert table["heap-rwfile-ioctl"]["cpu_copied"] == "" and table["heap-rwfile-ioctl"]["syscalls"] == ""
    assert table["heap-read"]["cpu_copied"] == str(SIZE)


def test_the_flame_graph_has_no_frame_of_our_tracer(tmp_path):
    with recorded(tmp_path) as session:
        folded = flame.folded_stacks(session)
        page = section(rendered(session), "flame")
    assert folded == {"read;ksys_read;vfs_read;ext4_file_read_iter": SIZE}
    assert "bpf_prog" not in page and "bpf_trampoline" not in page


def test_kernel_frames_leave_out_every_tracer_frame_and_name_the_hooked_function():
    assert kernel_frames(RAW_STACK) == ["ext4_file_read_iter", "vfs_read", "ksys_read"]
    assert kernel_frames(RAW_STACK, {"copy_filemap_read": "filemap_read"}) == [
        "filemap_read", "ext4_file_read_iter", "vfs_read", "ksys_read"]
    kprobe = ["bpf_prog_0123456789abcdef_gup_slow", "bpf_trace_run2", "kprobe_dispatcher", "kprobe_ftrace_handler",
              "ftrace_trampoline", "__get_user_pages", "__kretprobe_trampoline", "arch_rethook_trampoline", "vfs_read"]
    assert kernel_frames(kprobe) == ["__get_user_pages", "vfs_read"]
    # kernel functions that merely start like a program are kept
    assert kernel_frames(["bpf_prog_add", "bpf_prog_run_pin_on_cpu"]) == ["bpf_prog_add", "bpf_prog_run_pin_on_cpu"]


def test_a_traced_command_says_why_its_buffers_are_not_listed(tmp_path):
    command = method("load_model.py", "command", 10.0, 3.0, 0.0, inode=0,
                     paths={"read": (Counters(calls=4, bytes=SIZE, cpu_copied=SIZE), hist(b17=4))})
    run = runner.ValidateRun([command], None, True, [], {}, {}, ["python3", "load_model.py"], 0,
                             kernel={"release": "7.2.13-cloud-amd64"})
    record_run(run, str(tmp_path / "c.session"))
    with Session(str(tmp_path / "c.session")) as session:
        assert tables.summary(session)["duration_s"] == 3.2
        page = rendered(session)
    assert "it does not list its buffers" in section(page, "top-buffers")
    assert "iter/dmabuf" not in section(page, "top-buffers")
