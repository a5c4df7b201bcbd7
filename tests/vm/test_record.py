"""`dmabuf-top record -- CMD` in the lab guest, on real dma-bufs: names, sizes, exit code, a killed recorder."""
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dmabuf_top.recording import session as s
from dmabuf_top.analysis import flame, tables
from dmabuf_top.analysis.html import HtmlRenderer
from dmabuf_top.analysis.perfetto import PerfettoRenderer
from dmabuf_top.recording.session import Session, SessionError

pytestmark = pytest.mark.guest

MIB = 1 << 20
SCRATCH = "/mnt/scratch"

LOAD_MODEL = os.path.join(os.path.dirname(__file__), "load_model.py")
CHUNK = 2 * MIB  # load_model.py reads this much buffered into the heap buffer, and O_DIRECT into the udmabuf
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def workload(tmp_path, heap_available, udmabuf_available):
    model = os.path.join(SCRATCH, "model.bin")
    with open(model, "wb") as file:
        file.write(os.urandom(2 * CHUNK))
    yield model
    os.unlink(model)


def record_argv(session, *command):
    return [sys.executable, "-m", "dmabuf_top", "record", "-o", str(session), "--interval", "0.2", "--", *command]


def load_model_argv(model, pid_file, hold_s, exit_code):
    # Through a shell that forks it: the recorder must follow the command's children.
    return ["sh", "-c", '"$0" "$@"; exit $?', sys.executable, LOAD_MODEL, model, str(pid_file), str(hold_s),
            str(exit_code)]


def named_buffers(session):
    return {b.name: (b.exporter, b.size) for b in session.records(s.BufferSnapshot) if b.name}


def test_record_a_model_load(workload, tmp_path):
    model = workload
    path, pid_file = tmp_path / "load.session", tmp_path / "pid"
    run = subprocess.run(record_argv(path, *load_model_argv(model, pid_file, 1, 3)),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 3, run.stderr
    assert "recording ended: command exited with code 3" in run.stderr
    loader = int(pid_file.read_text())
    with Session(path) as session:
        assert session.exit_code == 3 and session.end_reason == "command exited with code 3"
        assert session.metadata["command"][-4:] == [model, str(pid_file), "1", "3"]
        assert named_buffers(session) == {b"weights-heap": ("system", 4 * MIB),
                                          b"weights-udmabuf": ("udmabuf", 8 * MIB)}
        live = {h.name for h in session.hooks() if h.live}
        assert {"iter/dmabuf", "exit_readv", "copy_filemap_read", "gup_fast_exit", "follow_fork",
                "lifecycle_dma_buf_export", "taskstats"} <= live
        assert session.features()["iter/dmabuf"][0]
        inode = {b.name: b.inode for b in session.records(s.BufferSnapshot)}
        heap, udmabuf = inode[b"weights-heap"], inode[b"weights-udmabuf"]

        # Per buffer and path, from the in-kernel counters: the buffered read was one CPU copy into
        # the heap buffer, the O_DIRECT read pinned every page of the udmabuf's memfd and copied nothing.
        per_buffer = {(i, p): (moved, copied, pinned, calls) for i, p, moved, copied, pinned, calls in session.query(
            "SELECT inode, path, sum(bytes), sum(cpu_copied_bytes), sum(pinned_pages), sum(calls) "
            "FROM path_samples WHERE inode != 0 GROUP BY 1, 2")}
        assert per_buffer == {(heap, "read"): (CHUNK, CHUNK, 0, 1),
                              (udmabuf, "read_direct"): (CHUNK, 0, CHUNK // PAGE, 1)}
        totals = {t.path: t for t in tables.path_totals(session)}
        direct = totals["read_direct"]
        assert (direct.calls, direct.bytes, direct.cpu_copied_bytes, direct.pinned_bytes) == (1, CHUNK, 0, CHUNK)
        assert totals["read"].cpu_copied_bytes >= CHUNK  # plus the interpreter's own imports
        top = {b.name: b for b in tables.top_buffers(session)}
        assert (top[b"weights-heap"].size, top[b"weights-heap"].io_bytes) == (4 * MIB, CHUNK)
        assert (top[b"weights-udmabuf"].size, top[b"weights-udmabuf"].io_bytes) == (8 * MIB, CHUNK)

        # The same two calls as events, from the loader (a child of the traced shell).
        events = session.query("SELECT tgid, path, inode, bytes, errno, cpu_copied_bytes, pinned_pages "
                               "FROM io_events WHERE inode != 0 ORDER BY time_ns")
        assert events == [(loader, "read", heap, CHUNK, 0, CHUNK, 0),
                          (loader, "read_direct", udmabuf, CHUNK, 0, 0, CHUNK // PAGE)]
        lifecycle = set(session.query("SELECT inode, event, tgid, size FROM lifecycle_events"))
        assert {(heap, "export", loader, 4 * MIB), (udmabuf, "export", loader, 8 * MIB),
                (heap, "release", loader, 4 * MIB), (udmabuf, "release", loader, 8 * MIB)} <= lifecycle
        assert [r.calls for r in tables.latency_table(session) if r.path == "read_direct"] == [1]
        assert session.query("SELECT count(*) FROM taskstats WHERE tgid = ?", (loader,))[0][0] >= 1
        assert tables.dropped_events(session) == {}
        folded = flame.folded_stacks(session)
        # Kernel stacks at the copy and the pin, with the hooked function as the leaf.
        assert any(line.startswith("read;") and line.endswith(";filemap_read") for line in folded)
        assert any("__iomap_dio_rw" in line and line.endswith(";gup_fast_fallback") for line in folded)
        assert not any("bpf_trampoline" in line for line in folded)

        # The report and the Perfetto trace, rendered in this process (the CLI is tested on the host).
        page, trace = io.StringIO(), io.StringIO()
        HtmlRenderer().render(session, page)
        PerfettoRenderer().render(session, trace)
    for text in ("weights-heap", "weights-udmabuf", "<td>read_direct</td>", "gup_fast_fallback", "filemap_read"):
        assert text in page.getvalue(), text
    slices = [e for e in json.loads(trace.getvalue())["traceEvents"] if e.get("ph") == "X" and e["pid"] == loader]
    assert sum(e["args"]["bytes"] for e in slices if e["name"] == "read_direct") == CHUNK


def test_sigkill_of_the_recorder_leaves_a_readable_session(workload, tmp_path):
    model = workload
    path = tmp_path / "killed.session"
    pid_file = tmp_path / "pid"
    recorder = subprocess.Popen(record_argv(path, *load_model_argv(model, pid_file, 60, 0)),
                                stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        passes = 0
        while passes < 3:
            assert time.monotonic() < deadline, "the recorder committed no buffer snapshot in time"
            time.sleep(0.5)
            if pid_file.exists():
                try:
                    with Session(path) as session:
                        passes = session.query("SELECT count(DISTINCT time_ns) FROM buffer_snapshots "
                                               "WHERE name = ?", (b"weights-heap",))[0][0]
                except SessionError:
                    pass  # caught between creation and the first commit
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(timeout=30)
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        recorder.kill()
    with Session(path) as session:
        assert session.end_reason.startswith("unfinished")
        assert named_buffers(session) == {b"weights-heap": ("system", 4 * MIB),
                                          b"weights-udmabuf": ("udmabuf", 8 * MIB)}
        kept = session.query("SELECT count(DISTINCT time_ns) FROM buffer_snapshots WHERE name = ?",
                             (b"weights-heap",))[0][0]
        assert kept >= 3
        # The reads happened before those passes, so their counters were committed with them.
        heap = session.query("SELECT inode FROM buffer_snapshots WHERE name = ?", (b"weights-heap",))[0][0]
        assert session.query("SELECT sum(bytes), sum(cpu_copied_bytes) FROM path_samples WHERE inode = ?",
                             (heap,))[0] == (CHUNK, CHUNK)

    truncated = tmp_path / "truncated.session"
    data = path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    run = subprocess.run([sys.executable, "-m", "dmabuf_top", "report", str(truncated), "-o",
                          str(tmp_path / "t.html")], capture_output=True, text=True, timeout=120)
    assert run.returncode == SessionError.exit_code
    assert run.stderr == f"dmabuf-top: {truncated} is truncated ({len(data) // 2} of {len(data)} bytes): " \
                         "copy the whole file, or record again\n"
