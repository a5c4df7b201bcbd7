"""`dmabuf-top record -- CMD` in the lab guest, on real dma-bufs: names, sizes, exit code, a killed recorder."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dmabuf_top import session as s
from dmabuf_top.session import Session, SessionError

pytestmark = pytest.mark.guest

MIB = 1 << 20
SCRATCH = "/mnt/scratch"

# A model loader's shape: two named buffers, a file read into one of them, held a while, exit 3.
LOAD_MODEL = textwrap.dedent("""
    import os, sys, time
    from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
    weights = alloc_heap(4 << 20, name="weights-heap")
    staging = alloc_udmabuf(8 << 20, name="weights-udmabuf")
    view = staging.mmap_memfd()
    with open(sys.argv[1], "rb", buffering=0) as model:
        read = model.readinto(memoryview(view)[: 2 << 20])
    assert read == 2 << 20, read
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(float(sys.argv[3]))
    view.close()
    staging.close()
    weights.close()
    sys.exit(3)
""")


@pytest.fixture
def workload(tmp_path, heap_available, udmabuf_available):
    model = os.path.join(SCRATCH, "model.bin")
    with open(model, "wb") as file:
        file.write(os.urandom(2 * MIB))
    script = tmp_path / "load_model.py"
    script.write_text(LOAD_MODEL)
    yield model, script
    os.unlink(model)


def record_argv(session, *command):
    return [sys.executable, "-m", "dmabuf_top", "record", "-o", str(session), "--interval", "0.2", "--", *command]


def named_buffers(session):
    return {b.name: (b.exporter, b.size) for b in session.records(s.BufferSnapshot) if b.name}


def test_record_a_model_load(workload, tmp_path):
    model, script = workload
    path = tmp_path / "load.session"
    run = subprocess.run(record_argv(path, sys.executable, str(script), model, str(tmp_path / "pid"), "2"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 3, run.stderr
    assert "recording ended: command exited with code 3" in run.stderr
    with Session(path) as session:
        assert session.exit_code == 3 and session.end_reason == "command exited with code 3"
        assert session.metadata["command"][1:] == [str(script), model, str(tmp_path / "pid"), "2"]
        assert named_buffers(session) == {b"weights-heap": ("system", 4 * MIB),
                                          b"weights-udmabuf": ("udmabuf", 8 * MIB)}
        assert [h for h in session.hooks() if h.name == "iter/dmabuf"][0].live
        assert session.features()["iter/dmabuf"][0]
    report = tmp_path / "load.html"
    subprocess.run([sys.executable, "-m", "dmabuf_top", "report", str(path), "-o", str(report)], check=True,
                   timeout=300)
    page = report.read_text()
    assert "weights-heap" in page and "weights-udmabuf" in page


def test_sigkill_of_the_recorder_leaves_a_readable_session(workload, tmp_path):
    model, script = workload
    path = tmp_path / "killed.session"
    pid_file = tmp_path / "pid"
    recorder = subprocess.Popen(record_argv(path, sys.executable, str(script), model, str(pid_file), "60"),
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

    truncated = tmp_path / "truncated.session"
    data = path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    run = subprocess.run([sys.executable, "-m", "dmabuf_top", "report", str(truncated), "-o",
                          str(tmp_path / "t.html")], capture_output=True, text=True, timeout=120)
    assert run.returncode == SessionError.exit_code
    assert run.stderr == f"dmabuf-top: {truncated} is truncated ({len(data) // 2} of {len(data)} bytes): " \
                         "copy the whole file, or record again\n"
