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

from dmabuf_top.probes.dma_evidence import DmaEvidence, file_pages_of, intersect, mapping_address, mapping_pfns

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


def anonymous(size):
    """Private anonymous memory: pages of no file, which the probe names by their frame (Python's default for
    mmap(-1) is MAP_SHARED: shmem, a file's pages, named by place, which a frame never matches). Written once, so
    that each page has a frame of its own: read, every page maps the shared zero page until a write copies it."""
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    for offset in range(0, size, 4096):
        mapping[offset] = 0
    return mapping


@pytest.mark.parametrize("hook", ["tp_btf", "raw_tp"])
def test_a_direct_read_is_device_writes_into_the_buffers_own_frames(data_file, hook):
    with anonymous(SIZE) as buffer:
        frames = mapping_pfns(buffer)
        with DmaEvidence(tgids=[os.getpid()], hooks=(hook,)) as evidence:
            direct_read(data_file, buffer)
            writes = evidence.read()
        assert buffer[:] == expected(data_file)
    assert writes.hook == hook
    assert (writes.stats.lost_bytes, writes.stats.error_bytes) == (0, 0)
    # The kernel counts the runs it skipped (5.12+): a number, read from every attached program, not presumed 0.
    assert isinstance(writes.stats.skipped_runs, int) and writes.stats.skipped_runs >= 0
    seen = intersect(writes, frames)
    assert (seen.into_buffer, seen.buffer_pages_written) == (SIZE, PAGES)
    assert seen.elsewhere < METADATA_SLACK
    assert writes.by_tgid[os.getpid()] == writes.total


def test_an_io_uring_direct_read_is_attributed_to_the_submitting_process(data_file):
    with anonymous(SIZE) as buffer:
        frames = mapping_pfns(buffer)
        fd = os.open(data_file, os.O_RDONLY | os.O_DIRECT)
        try:
            with DmaEvidence(tgids=[os.getpid()]) as evidence, Ring() as ring:
                assert ring.read_fully(fd, mapping_address(buffer), SIZE) == SIZE
                writes = evidence.read()
        finally:
            os.close(fd)
    assert (intersect(writes, frames).into_buffer, writes.by_tgid[os.getpid()]) == (SIZE, SIZE)


def test_a_buffered_read_lands_in_the_page_cache_not_in_the_buffer(data_file):
    evict(data_file)
    with anonymous(SIZE) as buffer:
        frames = mapping_pfns(buffer)
        fd = os.open(data_file, os.O_RDONLY)
        try:
            with DmaEvidence(tgids=[os.getpid()]) as evidence:
                assert libc.pread(fd, mapping_address(buffer), SIZE, 0) == SIZE
                writes = evidence.read()
            cache = file_pages_of(fd)  # by place: the page cache's frames may have moved since (compaction)
        finally:
            os.close(fd)
    assert intersect(writes, frames).into_buffer == 0
    assert intersect(writes, [], [cache]).into_buffer == SIZE


MADV_COLLAPSE = 25
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


def direct_read_into_memfd(path):
    """(memfd, its mapping, what the device wrote): an O_DIRECT read of `path` into the memfd's pages."""
    memfd = os.memfd_create("dma-evidence-places")
    os.ftruncate(memfd, SIZE)
    mapping = mmap.mmap(memfd, SIZE)
    with DmaEvidence(tgids=[os.getpid()]) as evidence:
        direct_read(path, mapping)
        writes = evidence.read()
    return memfd, mapping, writes


def test_the_device_writes_into_a_memfd_are_named_by_their_place_in_it(data_file):
    memfd, mapping, writes = direct_read_into_memfd(data_file)
    try:
        mine = file_pages_of(memfd)
        assert writes.stats.file_places == 1
        # Every page of the memfd, once, with the frame the device wrote (the mapping shows that frame still).
        assert {index: written for (dev, ino, index), written in writes.places.items() if (dev, ino) == mine.file} \
            == {index: (4096, pfn) for index, pfn in enumerate(mapping_pfns(mapping))}
        assert writes.written_files[mine.file] == 0
        assert intersect(writes, [], [mine]).into_buffer == SIZE
    finally:
        mapping.close()
        os.close(memfd)


def test_a_moved_memfd_page_keeps_its_place_and_a_punched_one_loses_it(data_file):
    memfd, mapping, _ = direct_read_into_memfd(data_file)
    try:
        with DmaEvidence(tgids=[os.getpid()]) as evidence:
            direct_read(data_file, mapping)
            written = mapping_pfns(mapping)
            # MADV_COLLAPSE needs a huge-page-aligned range: the memfd's first 2 MiB, mapped at such an address.
            reserved = mmap.mmap(-1, 4 << 20)
            at = (mapping_address(reserved) + (2 << 20) - 1) & ~((2 << 20) - 1)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_long)
            huge = libc.mmap(at, 2 << 20, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | 0x10, memfd, 0)
            assert huge == at and libc.madvise(huge, 2 << 20, MADV_COLLAPSE) == 0, os.strerror(ctypes.get_errno())
            assert libc.fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, SIZE - 4096, 4096) == 0
            writes = evidence.read()
        now = mapping_pfns(mapping)
        mine = file_pages_of(memfd)
    finally:
        mapping.close()
        os.close(memfd)
    assert all(a != b for a, b in zip(written[:512], now[:512]))  # the collapse moved every page of the range
    # The moved pages keep their places; the punched page (the last) left, and its place was forgotten.
    assert intersect(writes, now[:512]).into_buffer == 0  # by frame, the moved half is lost
    assert intersect(writes, [], [mine]).into_buffer == SIZE - 4096
    assert writes.written_files[mine.file] >= 1  # seen leaving (by the removal, and by the punch's call)


def test_a_buffered_read_names_the_files_page_cache_by_place(data_file):
    evict(data_file)
    with mmap.mmap(-1, SIZE) as buffer:
        with DmaEvidence(tgids=[os.getpid()]) as evidence:
            fd = os.open(data_file, os.O_RDONLY)
            try:
                assert libc.pread(fd, mapping_address(buffer), SIZE, 0) == SIZE
                cache = file_pages_of(fd)
            finally:
                os.close(fd)
            writes = evidence.read()
    assert intersect(writes, [], [cache]).into_buffer == SIZE


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
