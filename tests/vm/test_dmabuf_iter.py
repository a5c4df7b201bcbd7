"""iter/dmabuf against real buffers: the reader returns exactly what the kernel holds.

Checked three ways: against what the test made (fstat of each fd), against
debugfs bufinfo (the kernel's own listing), and across frees.
"""
import ctypes
import mmap
import os

import pytest

from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
from dmabuf_top.inventory.bufinfo import read_bufinfo
from dmabuf_top.probes.dmabuf_iter import DmabufIterator, read_buffers

pytestmark = pytest.mark.guest

NAMES = [b"model-weights", b"\x1b[2J<script>alert(1)</script>", b"\xff\xfe bad utf-8", b"a" * 31, None]


def identity(buffer):
    return (buffer.inode, buffer.size, buffer.exporter, buffer.name)


@pytest.fixture
def population(heap_available, udmabuf_available):
    made = []
    try:
        for index, name in enumerate(NAMES):
            made.append(alloc_heap((index + 1) * (1 << 20), name=name))
            made.append(alloc_udmabuf((index + 1) * 64 * 1024, name=name))
        yield made
    finally:
        for buffer in made:
            buffer.close()


def test_reader_returns_exactly_the_buffers_made(population):
    seen = {b.inode: b for b in read_buffers()}
    expected = {
        os.fstat(made.fd).st_ino: (made.size, made.exporter) for made in population
    }
    assert set(seen) == set(expected)
    for inode, (size, exporter) in expected.items():
        assert (seen[inode].size, seen[inode].exporter) == (size, exporter)
    assert sorted(repr(b.name) for b in seen.values()) == sorted(repr(name) for name in NAMES * 2)


def test_reader_agrees_with_debugfs_bufinfo(population, bufinfo_available):
    ours = read_buffers()
    theirs = read_bufinfo().buffers
    assert sorted(identity(b) for b in ours) == sorted((b.inode, b.size, b.exporter, b.name) for b in theirs)
    counts = {b.inode: b.count for b in theirs}
    assert {b.inode: b.file_refs for b in ours} == counts


def test_udmabuf_names_the_memfd_behind_it(population):
    seen = {b.inode: b for b in read_buffers()}
    for made in population:
        record = seen[os.fstat(made.fd).st_ino]
        if made.exporter == "udmabuf":
            backing = os.fstat(made.memfd)
            assert (record.backing_inode, record.backing_dev) == (backing.st_ino, backing.st_dev)
        else:
            assert record.backing_inode == 0


def test_file_references_follow_fds_and_mappings(heap_available):
    """Every fd and every mapping holds a reference on the dma-buf's file; the iterator's own is not counted."""
    with alloc_heap(1 << 20, name="refs") as buffer:
        inode = os.fstat(buffer.fd).st_ino

        def refs():
            return {b.inode: b.file_refs for b in read_buffers()}[inode]

        assert refs() == 1
        duplicate = os.dup(buffer.fd)
        assert refs() == 2
        os.close(duplicate)
        assert refs() == 1
        address = libc_mmap(buffer.fd, buffer.size)
        assert refs() == 2
        libc_munmap(address, buffer.size)
        assert refs() == 1


def libc_mmap(fd, length):
    # Python's mmap module dup()s the fd it maps, which would add a second reference: go to libc.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    return address


def libc_munmap(address, length):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    assert libc.munmap(address, length) == 0


def test_freed_buffers_leave_and_one_iterator_reads_many_times(heap_available, udmabuf_available):
    with DmabufIterator() as iterator:
        before = {b.inode for b in iterator.read()}
        first = alloc_heap(1 << 20, name="short-lived")
        second = alloc_udmabuf(1 << 20, name="short-lived")
        during = {b.inode for b in iterator.read()}
        assert during - before == {os.fstat(first.fd).st_ino, os.fstat(second.fd).st_ino}
        first.close()
        second.close()
        assert {b.inode for b in iterator.read()} == before
