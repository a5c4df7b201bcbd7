"""`dmabuf-top record` keeps every buffer, however short-lived, with its names, creator and allocation stack
(issue 16): real system-heap buffers and a udmabuf made by a C loader (tests/vm/named_loader.c) built here with
frame pointers."""
import csv
import io
import os
import subprocess
import sys

import pytest

from dmabuf_top.analysis import tables
from dmabuf_top.analysis.export import CsvRenderer
from dmabuf_top.analysis.html import HtmlRenderer
from dmabuf_top.features import WITHHOLD_ENV
from dmabuf_top.probes.hooks import State
from dmabuf_top.recording.session import Session

pytestmark = pytest.mark.guest

MIB = 1 << 20
SHORT_SIZE, SHORT_READ = 64 << 10, 4 << 10  # named_loader.c's short buffer and the bytes read into it
SCRATCH = "/mnt/scratch"
SOURCE = os.path.join(os.path.dirname(__file__), "named_loader.c")
COMM = "named_loader"


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    if not os.path.exists("/dev/dma_heap/system"):
        pytest.skip("not inside the lab guest (/dev/dma_heap/system is missing)")
    binary = tmp_path_factory.mktemp("loader") / COMM
    subprocess.run(["cc", "-O1", "-fno-omit-frame-pointer", "-o", str(binary), SOURCE], check=True, timeout=300)
    data = os.path.join(SCRATCH, "buffers.bin")
    with open(data, "wb") as file:
        file.write(os.urandom(16 * MIB))
    yield str(binary), data
    os.unlink(data)


def record(tmp_path, *command, interval="0.2", withheld=""):
    """withheld: attach kinds the recorder plans without (features.WITHHOLD_ENV), as on a kernel refusing them."""
    path = tmp_path / "buffers.session"
    run = subprocess.run([sys.executable, "-m", "dmabuf_top", "record", "-o", str(path), "--interval", interval,
                          "--", *command], capture_output=True, text=True, timeout=900,
                         env={**os.environ, WITHHOLD_ENV: withheld})
    assert run.returncode == 0, run.stderr
    pids = [int(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("pid ")]
    return path, pids, run.stdout


def rendered(session):
    page, table = io.StringIO(), io.StringIO()
    HtmlRenderer().render(session, page)
    CsvRenderer().render(session, table)
    return page.getvalue(), list(csv.DictReader(io.StringIO(table.getvalue())))


def user_frames(session, buffer):
    return tables.alloc_stacks(session).get(buffer.user_stack_id, ("", ()))[1]


def test_a_buffer_that_lives_milliseconds_is_named_with_its_io_creator_and_stack(loader, tmp_path):
    binary, data = loader
    # No iterator pass while the command runs but the first, as it starts, and the last, after it ended: what the
    # session knows of the 64 KiB buffer (made after the 16 MiB fill) comes from the lifecycle probe alone.
    path, (pid,), stdout = record(tmp_path, binary, "short", data, interval="600")
    (loader_ms,) = [float(line.split()[1]) for line in stdout.splitlines() if line.startswith("ms ")]
    with Session(path) as session:
        live = {hook.name for hook in session.hooks() if hook.live}
        assert {"lifecycle_dma_buf_export", "lifecycle_fentry_release", "lifecycle_fexit_set_name"} <= live
        buffers = {b.name: b for b in tables.top_buffers(session)}
        assert set(buffers) == {b"weights-16m", b"scratch-64k"}, buffers
        assert tables.summary(session)["buffers_seen"] == 2
        for name, size, read in ((b"weights-16m", 16 * MIB, 16 * MIB), (b"scratch-64k", SHORT_SIZE, SHORT_READ)):
            buffer = buffers[name]
            assert (buffer.exporter, buffer.size, buffer.io_bytes) == ("system", size, read), buffer
            assert (buffer.creator_pid, buffer.creator_comm) == (pid, COMM)
            assert buffer.created_s is not None and buffer.released_s is not None
            assert buffer.created_s < buffer.released_s
            assert any(frame.startswith("load_named_buffer+") for frame in user_frames(session, buffer)), \
                user_frames(session, buffer)
        scratch = buffers[b"scratch-64k"]
        # It really lived under 10 ms, by the kernel's export and release times (the loader's clock agrees).
        lifetime_ms = (scratch.released_s - scratch.created_s) * 1e3
        assert 0 < lifetime_ms < 10 and loader_ms < 10, (lifetime_ms, loader_ms)
        assert session.query("SELECT count(*) FROM buffer_snapshots WHERE inode = ?", (scratch.inode,))[0][0] == 0
        stacks = tables.allocation_stacks(session)
        assert sum(row.buffers for row in stacks) == 2
        assert any("dma_buf_export" in frame or "dma_heap" in frame for row in stacks for frame in row.kernel_frames)
        page, rows = rendered(session)
    for text in ("weights-16m", "scratch-64k", f"{pid} {COMM}", "load_named_buffer", "Allocation stacks"):
        assert text in page, text
    by_name = {row["name"]: row for row in rows}
    assert by_name["scratch-64k"]["io_bytes"] == str(SHORT_READ) and by_name["scratch-64k"]["creator_pid"] == str(pid)
    assert by_name["weights-16m"]["io_bytes"] == str(16 * MIB)
    print(f"scratch-64k lived {lifetime_ms:.3f} ms (session), {loader_ms:.3f} ms (loader)")


def test_a_buffer_renamed_after_its_io_shows_its_latest_name_and_the_earlier_one(loader, tmp_path):
    binary, data = loader
    path, (pid,), _ = record(tmp_path, binary, "rename", data)
    with Session(path) as session:
        (buffer,) = tables.top_buffers(session)
        assert buffer.name == b"after" and buffer.names == (b"before", b"after")
        assert (buffer.io_bytes, buffer.creator_pid) == (MIB, pid)
        page, rows = rendered(session)
    assert "after" in page and "(was before)" in page
    assert rows[0]["name"] == "after" and rows[0]["earlier_names"] == "before"


def test_a_buffer_made_by_a_child_that_exits_at_once_keeps_its_creator_and_stack(loader, tmp_path):
    binary, data = loader
    path, (parent, child), _ = record(tmp_path, binary, "child", data)
    with Session(path) as session:
        (buffer,) = tables.top_buffers(session)
        assert buffer.name == b"from-child" and (buffer.creator_pid, buffer.io_bytes) == (child, MIB)
        assert child != parent and buffer.released_s is not None
        # Its maps were gone before the recorder read them: the frames come from build ids.
        assert any(frame.startswith("load_named_buffer+") for frame in user_frames(session, buffer))


# Which program records a udmabuf's memfd at its export when the other one's attach kind is withheld: the
# dma_buf_export tracepoint as tp_btf where fentry is refused (the CI host's hook set), the fexit fallback where
# tp_btf is.
BACKING_PROGRAMS = {"fentry": ("lifecycle_udmabuf_backing_btf", "lifecycle_udmabuf_backing"),
                    "tp_btf": ("lifecycle_udmabuf_backing", "lifecycle_udmabuf_backing_btf")}


@pytest.mark.parametrize("withheld", sorted(BACKING_PROGRAMS))
def test_io_into_the_memfd_of_a_udmabuf_freed_within_milliseconds_is_the_udmabufs(loader, udmabuf_available,
                                                                                    tmp_path, withheld):
    """A read into a udmabuf's memfd names the memfd; the iterator never sees this udmabuf (its passes are at the
    start and the end), so only the lifecycle probe's backing record at its export says the memfd is its: the
    bytes are the udmabuf's, not inode 0's, whichever of the two programs took the record."""
    binary, data = loader
    path, (pid,), stdout = record(tmp_path, binary, "udmabuf", data, interval="600", withheld=withheld)
    (inode,) = [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("inode ")]
    used, other = BACKING_PROGRAMS[withheld]
    with Session(path) as session:
        assert session.query("SELECT count(*) FROM buffer_snapshots WHERE inode = ?", (inode,))[0][0] == 0
        reads = session.query("SELECT inode, sum(bytes) FROM io_events WHERE tgid = ? AND bytes = ? GROUP BY 1",
                              (pid, SHORT_READ))
        assert reads == [(inode, SHORT_READ)]
        buffer = {buffer.inode: buffer for buffer in tables.top_buffers(session)}[inode]
        assert (buffer.exporter, buffer.size, buffer.creator_pid) == ("udmabuf", SHORT_SIZE, pid), buffer
        assert buffer.io_bytes == SHORT_READ, buffer
        hooks = {hook.name: hook for hook in session.hooks()}
        assert hooks[used].state is State.LIVE, hooks[used]
        assert hooks[other].state is State.NOT_NEEDED, hooks[other]  # withheld, and nothing is lost
    print(stdout)
