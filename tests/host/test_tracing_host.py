"""I/O path tracing on this kernel: the tracepoint-only subset, with real files on a real filesystem."""
import ctypes
import mmap
import os

import pytest

from dmabuf_top import features, tracing

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)


@pytest.fixture(scope="module")
def report():
    return features.detect()


@pytest.fixture
def cold_file():
    """4 MiB of random bytes on the checkout's filesystem, written, synced and evicted from the page cache."""
    build = os.path.join(ROOT, "build")
    os.makedirs(build, exist_ok=True)
    path = os.path.join(build, f"tracing-host-{os.getpid()}.bin")
    data = os.urandom(4 << 20)
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
        os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    yield path, data
    os.unlink(path)


def has_page_cache(path):
    """A block filesystem keeps pages after a read; virtiofs/overlay setups may not: say so instead of failing."""
    with open("/proc/self/mountinfo") as mounts:
        fs = max((line for line in mounts if path.startswith(line.split()[4])), key=lambda l: len(l.split()[4]))
    return fs.split(" - ")[1].split()[0] in ("ext4", "xfs", "btrfs")


def test_tracepoint_subset_is_live_and_the_rest_says_why(report):
    with tracing.Tracer(report=report) as tracer:
        hooks = {hook.program: hook for hook in tracer.hooks}
    for syscall in tracing.SYSCALLS:
        assert hooks[f"enter_{syscall}"].live and hooks[f"exit_{syscall}"].via == "tracepoint"
    assert hooks["pagecache_add"].live and hooks["pagecache_delete"].live
    missing = tracing.missing_concerns(tracer.hooks)
    if not report.available("fentry"):
        # This CI kernel: fentry refused with EPERM, no kprobes, no dma_buf tracepoints (6.18).
        assert {"cpu_copy", "gup"} <= set(missing)
        assert "EPERM" in missing["cpu_copy"] and "kprobe refused" in missing["cpu_copy"]
        assert not hooks["copy_filemap_read"].live
    if not features.tracepoint_exists(features.tracefs_root(), "dma_buf:dma_buf_export") and not report.available("fentry"):
        assert "absent" in missing["lifecycle"] or "refused" in missing["lifecycle"]


def test_reading_a_cold_file_into_a_memfd_mapping_is_attributed_to_the_memfd(report, cold_file):
    """The destination address resolves (bpf_find_vma) to the memfd mapped there; the page cache is exact."""
    path, data = cold_file
    if not has_page_cache(path):
        pytest.skip(f"{path} is not on a block filesystem here")
    st = os.stat(path)
    memfd = os.memfd_create("tracing-host")
    os.ftruncate(memfd, len(data))
    mapping = mmap.mmap(memfd, len(data))
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    fd = os.open(path, os.O_RDONLY)
    try:
        with tracing.Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            for offset in range(0, len(data), 1 << 20):
                assert libc.pread(fd, address + offset, 1 << 20, offset) == 1 << 20
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            snap = tracer.snapshot()
        assert mapping[:] == data
        memfd_inode = os.fstat(memfd).st_ino
    finally:
        os.close(fd)
        mapping.close()
        os.close(memfd)
    pages = len(data) // PAGE
    assert snap.pagecache[(st.st_ino, st.st_dev)] == (pages, pages)
    (target, read), = [(t, c) for t, c in snap.by_target.items() if t.inode == memfd_inode]
    assert (target.path, target.kind, target.direct) == ("read", "shmem", False)
    assert (read.calls, read.errors, read.bytes, read.requested) == (4, 0, len(data), len(data))
    assert read.pc_added == pages and read.pc_removed == 0
    assert sum(read.latency_hist) == 4 and read.latency_ns > 0


def test_copy_file_range_on_one_filesystem_is_counted_with_both_ends(report, cold_file):
    path, data = cold_file
    copy = path + ".copy"
    fd_in = os.open(path, os.O_RDONLY)
    fd_out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with tracing.Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            copied = 0
            while copied < len(data):
                copied += os.copy_file_range(fd_in, fd_out, 1 << 20)
            snap = tracer.snapshot()
    finally:
        os.close(fd_in)
        os.close(fd_out)
    with open(copy, "rb") as result:
        assert result.read() == data
    os.unlink(copy)
    outcomes = {o: v for o, v in snap.outcomes.items() if o.path == "copy_file_range"}
    (outcome, value), = outcomes.items()
    assert (outcome.src_kind, outcome.dst_kind, outcome.error) == ("file", "file", 0)
    assert outcome.src_fs == outcome.dst_fs != "-"
    assert value == {"calls": 4, "bytes": len(data), "requested": len(data)}


def test_dropped_records_are_counted_and_account_for_every_call(report, cold_file):
    path, _ = cold_file
    fd = os.open(path, os.O_RDONLY)
    try:
        with tracing.Tracer(pid=os.getpid(), ignore_self=False, report=report, record=True) as tracer:
            for _ in range(20000):
                os.pread(fd, 8, 0)
            records = tracer.drain_records()
            snap = tracer.snapshot()
    finally:
        os.close(fd)
    assert snap.dropped > 0
    calls = sum(c.calls for c in snap.per_path().values())
    assert len(records) + snap.dropped == calls
    assert {r.tgid for r in records} == {os.getpid()}


def test_the_trace_command_shows_paths_missing_hooks_and_drops():
    from click.testing import CliRunner

    from dmabuf_top.cli import cli

    result = CliRunner().invoke(cli, ["trace", "--", "cat", os.path.join(ROOT, "README.md")])
    assert result.exit_code == 0, result.output
    assert "read" in result.output and "dropped events: 0" in result.output
    if "n/t" in result.output:
        assert "not traced:" in result.output
