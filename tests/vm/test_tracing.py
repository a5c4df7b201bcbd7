"""I/O path tracing in the lab guest: real files on ext4/NVMe, real dma-bufs, exact numbers.

The workloads run in this process (Tracer(pid=getpid(), ignore_self=False)),
through libc so the bytes land at the mapping's own address.
"""
import ctypes
import errno
import hashlib
import mmap
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from guest_files import address_of, drop_caches, libc, random_file  # tests/vm is on sys.path (its conftest)

from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
from dmabuf_top.cli import cli
from dmabuf_top.inventory.index import BufferIndex
from dmabuf_top.probes import iopaths
from dmabuf_top.probes.dmabuf_iter import read_buffers
from dmabuf_top.probes.hooks import missing_concerns
from dmabuf_top.probes.tracer import Tracer

pytestmark = pytest.mark.guest

SIZE = 64 << 20
PAGES = SIZE // mmap.PAGESIZE


@pytest.fixture(scope="module")
def data_file():
    """64 MiB of random bytes on the NVMe ext4 scratch disk, written once, with its digest."""
    with random_file("tracing-64m.bin", SIZE) as made:
        yield made


def libc_read(fd, address, length):
    done = libc.read(fd, address, length)
    if done < 0:
        return -ctypes.get_errno()
    return done


def file_identity(path):
    st = os.stat(path)
    return st.st_ino, st.st_dev


def symbolized_stacks(tracer, snapshot):
    """[(point, path, [frames innermost first], hits, amount)] for the snapshot's stacks."""
    kallsyms = tracer.kallsyms()
    return [(point, path, [kallsyms.name(ip) for ip in tracer.stack_ips(stack_id)], hits, amount)
            for (stack_id, point, path), (hits, amount) in snapshot.stacks.items()]


def traced_read(report, data_file, mapping, flags=0):
    """One read() of the whole file into `mapping` (closed after) under a Tracer of this process, the page cache
    dropped first: (snapshot, its symbolized stacks, per-buffer counters by inode); the mapping must hold the file."""
    path, digest = data_file
    drop_caches()
    with mapping:
        fd = os.open(path, os.O_RDONLY | flags)
        try:
            with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
                assert libc_read(fd, address_of(mapping), SIZE) == SIZE
                snap = tracer.snapshot()
                stacks = symbolized_stacks(tracer, snap)
            assert hashlib.sha256(mapping[:]).hexdigest() == digest
            inventory = read_buffers()
        finally:
            os.close(fd)
    index = BufferIndex()
    index.learn(inventory)
    return snap, stacks, index.per_buffer(snap.by_target)


def test_the_guest_has_the_hooks_these_tests_need(report):
    with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
        live = {hook.program for hook in tracer.hooks if hook.live}
        missing = missing_concerns(tracer.hooks)
    assert {"copy_filemap_read", "copy_generic_perform_write", "gup_fast_exit", "gup_slow_exit", "enter_read",
            "exit_read", "pagecache_add", "lifecycle_dma_buf_export", "lifecycle_fentry_release"} <= live
    assert missing == {}, missing


def test_buffered_read_into_a_heap_buffer_is_a_cpu_copy_through_the_page_cache(report, data_file, heap_available):
    path, _ = data_file
    with alloc_heap(SIZE, name="trace-heap") as buf:
        snap, stacks, per_buffer = traced_read(report, data_file, buf.mmap())
    counters = per_buffer[buf.inode]["read"]
    assert (counters.calls, counters.errors, counters.bytes, counters.requested) == (1, 0, SIZE, SIZE)
    assert counters.cpu_copied == SIZE
    assert counters.pc_added == PAGES
    assert counters.pinned_pages == 0 and counters.got_pages == 0
    assert sum(counters.latency_hist) == 1 and counters.latency_ns > 0
    assert snap.pagecache[file_identity(path)][0] == PAGES
    target = next(t for t in snap.by_target if t.inode == buf.inode)
    assert (target.kind, target.path, target.direct) == ("dmabuf", "read", False)
    copy_stacks = [s for s in stacks if s[0] == "cpu_copy_read" and s[1] == "read"]
    assert sum(s[4] for s in copy_stacks) == SIZE
    assert any("read" in frame for s in copy_stacks for frame in s[2])


def test_direct_read_into_a_udmabuf_memfd_pins_every_page_and_copies_nothing(report, data_file, udmabuf_available):
    with alloc_udmabuf(SIZE, name="trace-udmabuf") as buf:
        snap, stacks, per_buffer = traced_read(report, data_file, buf.mmap_memfd(), os.O_DIRECT)
    counters = per_buffer[buf.inode]["read"]
    assert (counters.calls, counters.errors, counters.bytes) == (1, 0, SIZE)
    assert counters.pinned_pages == PAGES
    assert counters.cpu_copied == 0
    assert counters.pc_added == 0
    target = next(t for t in snap.by_target if t.kind == "shmem" and t.path == "read")
    assert target.direct is True
    gup = [s for s in stacks if s[0] == "gup" and s[1] == "read"]
    assert sum(s[4] for s in gup) == PAGES
    assert any("iomap" in frame for s in gup for frame in s[2])


def test_direct_read_into_a_heap_mapping_fails_with_efault_and_is_counted(report, data_file, heap_available):
    path, _ = data_file
    with alloc_heap(1 << 20) as buf:
        mapping = buf.mmap()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
                result = libc_read(fd, address_of(mapping), 1 << 20)
                snap = tracer.snapshot()
        finally:
            os.close(fd)
            mapping.close()
    assert result == -errno.EFAULT
    outcome = {o: v for o, v in snap.outcomes.items() if o.path == "read" and o.dst_kind == "dmabuf"}
    assert [(o.error, o.src_fs, v["calls"], v["bytes"]) for o, v in outcome.items()] == [
        (-errno.EFAULT, "ext4", 1, 0)]
    target = next(t for t in snap.by_target if t.inode == buf.inode)
    assert snap.by_target[target].errors == 1 and target.direct is True


def test_copy_file_range_from_a_file_into_a_memfd_reports_the_kernels_outcome(report, data_file):
    path, _ = data_file
    length = 8 << 20
    memfd = os.memfd_create("trace-cfr")
    fd = os.open(path, os.O_RDONLY)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            try:
                result = os.copy_file_range(fd, memfd, length)
            except OSError as error:
                result = -error.errno
            snap = tracer.snapshot()
    finally:
        os.close(fd)
        os.close(memfd)
    outcomes = {o: v for o, v in snap.outcomes.items() if o.path == "copy_file_range"}
    assert len(outcomes) == 1
    (outcome, value), = outcomes.items()
    assert (outcome.src_kind, outcome.src_fs, outcome.dst_kind, outcome.dst_fs) == ("file", "ext4", "shmem", "tmpfs")
    assert outcome.error == min(result, 0)
    assert value == {"calls": 1, "bytes": max(result, 0), "requested": length}
    # What 7.2 does: the VFS refuses a cross-filesystem copy between ext4 and tmpfs.
    assert result == -errno.EXDEV


def test_sendfile_from_a_file_into_a_memfd_is_a_cpu_copy_into_shmem(report, data_file):
    path, _ = data_file
    length = 8 << 20
    memfd = os.memfd_create("trace-sendfile")
    fd = os.open(path, os.O_RDONLY)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            sent = os.sendfile(memfd, fd, 0, length)
            snap = tracer.snapshot()
        memfd_inode = os.fstat(memfd).st_ino
    finally:
        os.close(fd)
        os.close(memfd)
    assert sent == length
    target = next(t for t in snap.by_target if t.path == "sendfile")
    counters = snap.by_target[target]
    assert (target.kind, target.inode) == ("shmem", memfd_inode)
    assert (counters.calls, counters.bytes) == (1, length)
    assert counters.cpu_copied == length  # shmem_file_write_iter -> generic_perform_write


def test_lifecycle_of_a_heap_buffer(report, heap_available):
    with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
        buf = alloc_heap(1 << 20)
        inode = buf.inode
        mapping = buf.mmap()
        mapping.close()
        buf.close()
        snap = tracer.snapshot()
    events = {event: count for (ino, event), (count, _size) in snap.lifecycle.items() if ino == inode}
    assert events["export"] == 1
    assert events["mmap_internal"] == 1  # a user mmap(); dma_buf:dma_buf_mmap is the in-kernel dma_buf_mmap()
    assert events["release"] == 1
    assert snap.lifecycle[(inode, "export")][1] == 1 << 20


def test_records_plus_dropped_equals_calls_when_the_ring_overflows(report, data_file):
    path, _ = data_file
    fd = os.open(path, os.O_RDONLY)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report, record=True) as tracer:
            for _ in range(12000):  # more than the 1 MiB ring holds, none polled meanwhile
                os.pread(fd, 16, 0)
            records = tracer.drain_records()  # epoll and bpf(): not traced paths
            snap = tracer.snapshot()
    finally:
        os.close(fd)
    io_records = [r for r in records if isinstance(r, iopaths.IoRecord)]
    assert snap.dropped > 0
    assert snap.per_path()["read"].calls >= 12000
    assert len(io_records) + snap.dropped == sum(c.calls for c in snap.per_path().values())
    preads = [r for r in io_records if r.path == "read" and r.ret == 16]
    assert preads and preads[0].tgid == os.getpid() and preads[0].kind == "none"


SHARED_MEMORY_READER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "shared_memory_reader.py")  # see its docstring


def _read_calls(snapshot, tgid):
    return sum(c.calls for (task, path), c in snapshot.by_task.items() if task == tgid and path == "read")


@pytest.mark.parametrize("fork", [False, True], ids=["same process", "forked child"])
def test_the_vfs_path_skips_ordinary_reads_until_the_process_maps_shared_memory(report, data_file, fork):
    """Every process traced (as the live view and export run it): a process that maps no dma-buf, memfd or
    device memory has its reads of an ordinary file into anonymous memory pass uncounted (they leave the
    VFS hooks after a few loads); once it maps a memfd, every read of it is counted, and a child forked
    after the mapping is counted from its first read."""
    with Tracer(report=report, stacks=False) as tracer:
        if tracer.attribution != "vfs":
            pytest.skip(f"the VFS path is not used here: {[h.why for h in tracer.hooks if h.program == 'enter_read']}")
        out = subprocess.run([sys.executable, SHARED_MEMORY_READER, data_file[0], "300", "40",
                              "fork" if fork else "map"], check=True, capture_output=True, text=True).stdout
        snapshot = tracer.snapshot()
    parent, reader = map(int, out.split())
    if fork:
        assert 40 <= _read_calls(snapshot, reader) < 300, snapshot.by_task
    else:
        assert 40 <= _read_calls(snapshot, parent) < 300, snapshot.by_task  # the 300 before the mapping: none


def test_the_lab_attributes_at_the_vfs_level_and_doctor_says_so(report):
    with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
        assert tracer.attribution == "vfs"
        assert not tracer.programs["syscall_enter_btf"].live and not tracer.programs["flush_on_switch"].live
        read = next(hook for hook in tracer.hooks if hook.program == "enter_read")
        assert read.live and read.via == "fentry" and read.target == "vfs_read (read)"
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0 and "I/O attribution" in result.output and "\n  vfs: " in result.output
