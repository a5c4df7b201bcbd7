"""DMA evidence on this machine's own block device (root, real BPF, real device reads).

Skipped where the test directory is on no block device (tmpfs, a network file system). On the
project's CI host it is a virtio-blk disk: the device DMAs into the pages of a direct read's buffer.
"""
import ctypes
import mmap
import os
import subprocess
import sys

import pytest
from uring_read import Ring  # tests/ is on sys.path (its conftest, rootdir-relative; no packages)

from dmabuf_top.probes.dma_evidence import DmaEvidence, intersect, mapping_address, mapping_pfns

SIZE = 4 << 20
PAGES = SIZE // 4096
METADATA_SLACK = 1 << 20

libc = ctypes.CDLL(None, use_errno=True)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)


def block_device_of(path):
    """/sys/dev/block/MAJ:MIN of the file system holding path, or None (tmpfs, overlay, NFS ...)."""
    st = os.stat(path)
    node = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    return node if os.path.exists(node) else None


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    for directory in (tmp_path_factory.mktemp("dma"), "/var/tmp"):
        if os.access(directory, os.W_OK) and block_device_of(directory):
            break
    else:
        pytest.skip("no writable directory on a block device here (tmpfs or network file systems only)")
    path = os.path.join(directory, f"dma-evidence-host-{os.getpid()}.bin")
    with open(path, "wb") as out:
        out.write(os.urandom(SIZE))
        out.flush()
        os.fsync(out.fileno())
    yield path
    os.unlink(path)


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def direct_read(path, mapping):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        assert libc.pread(fd, mapping_address(mapping), len(mapping), 0) == len(mapping)
    finally:
        os.close(fd)


def expected(path):
    with open(path, "rb") as data:
        return data.read()


@pytest.mark.parametrize("hook", ["tp_btf", "raw_tp"])
def test_a_direct_read_is_device_writes_into_the_buffers_own_frames(data_file, hook):
    with mmap.mmap(-1, SIZE) as buffer:
        frames = mapping_pfns(buffer)
        with DmaEvidence(tgids=[os.getpid()], hooks=(hook,)) as evidence:
            direct_read(data_file, buffer)
            writes = evidence.read()
        assert buffer[:] == expected(data_file)
    assert writes.hook == hook
    assert (writes.stats.lost_bytes, writes.stats.error_bytes) == (0, 0)
    # The kernel counts the runs it skipped (5.12+): a number, read from every attached program, not presumed 0.
    assert isinstance(writes.stats.skipped_runs, int) and writes.stats.skipped_runs >= 0
    seen = intersect(writes.pages, frames)
    assert (seen.into_buffer, seen.buffer_pages_written) == (SIZE, PAGES)
    assert seen.elsewhere < METADATA_SLACK
    assert writes.by_tgid[os.getpid()] == writes.total


def test_an_io_uring_direct_read_is_attributed_to_the_submitting_process(data_file):
    with mmap.mmap(-1, SIZE) as buffer:
        frames = mapping_pfns(buffer)
        fd = os.open(data_file, os.O_RDONLY | os.O_DIRECT)
        try:
            with DmaEvidence(tgids=[os.getpid()]) as evidence, Ring() as ring:
                assert ring.read_fully(fd, mapping_address(buffer), SIZE) == SIZE
                writes = evidence.read()
        finally:
            os.close(fd)
    assert (intersect(writes.pages, frames).into_buffer, writes.by_tgid[os.getpid()]) == (SIZE, SIZE)


def test_a_buffered_read_lands_in_the_page_cache_not_in_the_buffer(data_file):
    evict(data_file)
    with mmap.mmap(-1, SIZE) as buffer:
        frames = mapping_pfns(buffer)
        fd = os.open(data_file, os.O_RDONLY)
        try:
            with DmaEvidence(tgids=[os.getpid()]) as evidence:
                assert libc.pread(fd, mapping_address(buffer), SIZE, 0) == SIZE
                writes = evidence.read()
            # MAP_PRIVATE and only read: the mapping shows the page-cache pages themselves.
            with mmap.mmap(fd, SIZE, access=mmap.ACCESS_COPY) as cached:
                cache_frames = mapping_pfns(cached)
        finally:
            os.close(fd)
    assert intersect(writes.pages, frames).into_buffer == 0
    assert intersect(writes.pages, cache_frames).into_buffer == SIZE


CHILD_READS = """
import mmap, os, sys, ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)
buffer = mmap.mmap(-1, {size})
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
assert libc.pread(fd, ctypes.addressof(ctypes.c_char.from_buffer(buffer)), {size}, 0) == {size}
print(os.getpid())
"""


@pytest.mark.parametrize("record_all", [False, True])
def test_reads_of_untraced_processes_are_counted_not_recorded_unless_recording_all(data_file, record_all):
    with DmaEvidence(tgids=[os.getpid()], record_all=record_all) as evidence:
        child = subprocess.run([sys.executable, "-c", CHILD_READS.format(size=SIZE), data_file], check=True,
                               capture_output=True, text=True)
        writes = evidence.read()
    child_pid = int(child.stdout)
    if record_all:
        assert writes.by_tgid.get(child_pid) == SIZE
        assert writes.total >= SIZE
    else:
        assert child_pid not in writes.by_tgid
        assert writes.stats.untraced_bytes >= SIZE
        assert writes.total < METADATA_SLACK
