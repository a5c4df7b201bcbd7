"""Real dma-bufs in the lab guest: allocation, fdinfo, debugfs bufinfo, mmap, names.

Everything here is checked against what the kernel itself reports, never
against what dmabuf_top.alloc believes it made.
"""
import errno
import fcntl
import mmap
import os

import pytest

from dmabuf_top import alloc
from dmabuf_top.alloc import alloc_heap, alloc_udmabuf, set_name
from dmabuf_top.inventory.bufinfo import read_bufinfo

pytestmark = pytest.mark.guest

PAGE = mmap.PAGESIZE
HEAP_SIZES = [PAGE, 3 * PAGE + 123, 1 << 20, 8 << 20]
UDMABUF_SIZES = [PAGE, 5 * PAGE, 1 << 20, 16 << 20]

HOSTILE_NAMES = [
    b"tab\tand \x1b[31mred\x1b[0m",
    b"\xff\xfe\xc3(not utf-8)",
    b"line1\nline2",
    b"\n\tAttached Devices:\n\tevil",
    b"x\nTotal 7 objects, 1 bytes",
    b"<none>",
    b"",
]


def page_align(size):
    return (size + PAGE - 1) // PAGE * PAGE


def fdinfo(fd):
    with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
        return f.read()


def fdinfo_fields(fd):
    """fdinfo as a dict; the name line is raw, so only trust it for names without newlines."""
    fields = {}
    for line in fdinfo(fd).split(b"\n"):
        key, sep, value = line.partition(b":\t")
        if sep:
            fields.setdefault(key.decode(), value)
    return fields


@pytest.fixture
def buffers():
    made = []
    yield made
    for buffer in made:
        buffer.close()


@pytest.fixture
def both_available(heap_available, udmabuf_available, bufinfo_available):
    return True


def ours(info, inodes):
    return {b.inode: b for b in info.buffers if b.inode in inodes}


# --- fdinfo ------------------------------------------------------------------------


@pytest.mark.parametrize("size", HEAP_SIZES)
def test_heap_buffer_fdinfo(heap_available, buffers, size):
    buffer = alloc_heap(size, name=f"heap-{size}")
    buffers.append(buffer)
    fields = fdinfo_fields(buffer.fd)
    assert buffer.size == page_align(size)
    assert int(fields["size"]) == buffer.size
    assert fields["exp_name"] == b"system" and buffer.exporter == "system"
    assert fields["name"] == f"heap-{size}".encode()
    assert int(fields["ino"]) == buffer.inode == os.fstat(buffer.fd).st_ino
    assert int(fields["count"]) == 1


@pytest.mark.parametrize("size", UDMABUF_SIZES)
def test_udmabuf_fdinfo(udmabuf_available, buffers, size):
    buffer = alloc_udmabuf(size, name=f"udmabuf-{size}")
    buffers.append(buffer)
    fields = fdinfo_fields(buffer.fd)
    assert buffer.size == page_align(size)
    assert int(fields["size"]) == buffer.size
    assert fields["exp_name"] == b"udmabuf" and buffer.exporter == "udmabuf"
    assert fields["name"] == f"udmabuf-{size}".encode()
    assert int(fields["ino"]) == buffer.inode
    assert buffer.memfd is not None
    seals = fcntl.fcntl(buffer.memfd, alloc.F_GET_SEALS)
    assert seals & alloc.F_SEAL_SHRINK
    assert os.fstat(buffer.memfd).st_size == buffer.size


def test_unnamed_buffer_has_no_name_line(heap_available, buffers):
    buffer = alloc_heap(PAGE)
    buffers.append(buffer)
    assert b"\nname:" not in fdinfo(buffer.fd)
    assert buffer.name is None


# --- debugfs bufinfo ---------------------------------------------------------------


def test_bufinfo_lists_exactly_our_buffers(both_available, buffers):
    before = read_bufinfo()
    expected = {}
    for size in HEAP_SIZES:
        buffer = alloc_heap(size, name=f"h{size}")
        buffers.append(buffer)
        expected[buffer.inode] = (page_align(size), "system", f"h{size}".encode())
    for size in UDMABUF_SIZES:
        buffer = alloc_udmabuf(size, name=f"u{size}")
        buffers.append(buffer)
        expected[buffer.inode] = (page_align(size), "udmabuf", f"u{size}".encode())

    after = read_bufinfo()
    seen = ours(after, expected)
    assert {inode: (b.size, b.exporter, b.name) for inode, b in seen.items()} == expected
    assert all(b.count == 1 and b.devices == () for b in seen.values())
    preexisting = {b.inode for b in before.buffers}
    assert {b.inode for b in after.buffers} - preexisting == set(expected)
    assert after.total_objects == len(after.buffers) == len(before.buffers) + len(expected)
    assert after.total_bytes == sum(b.size for b in after.buffers)


def test_freed_buffers_leave_bufinfo(both_available):
    made = [alloc_heap(64 << 10, name="going"), alloc_udmabuf(64 << 10, name="going")]
    inodes = {buffer.inode for buffer in made}
    assert set(ours(read_bufinfo(), inodes)) == inodes
    for buffer in made:
        buffer.close()
    assert ours(read_bufinfo(), inodes) == {}


def test_udmabuf_outlives_its_memfd_but_not_its_fd(udmabuf_available, bufinfo_available):
    buffer = alloc_udmabuf(PAGE, name="memfd-closed")
    os.close(buffer.memfd)
    buffer.memfd = None
    assert buffer.inode in ours(read_bufinfo(), {buffer.inode})
    buffer.close()
    assert buffer.inode not in ours(read_bufinfo(), {buffer.inode})


def test_mmap_holds_a_file_reference(both_available, buffers):
    buffer = alloc_heap(PAGE, name="mapped")
    buffers.append(buffer)
    assert ours(read_bufinfo(), {buffer.inode})[buffer.inode].count == 1
    mapping = buffer.mmap()
    try:
        # Our fd + the VMA's reference, + the dup CPython's mmap keeps of the fd.
        assert ours(read_bufinfo(), {buffer.inode})[buffer.inode].count in (2, 3)
        assert b"/dmabuf:mapped" in open("/proc/self/maps", "rb").read()
    finally:
        mapping.close()
    assert ours(read_bufinfo(), {buffer.inode})[buffer.inode].count == 1


# --- mmap ----------------------------------------------------------------------------


def pattern(size, seed):
    block = bytes((seed + i * 7) & 0xFF for i in range(PAGE))
    return (block * (size // PAGE + 1))[:size]


@pytest.mark.parametrize("size", [PAGE, 1 << 20])
def test_heap_mmap_write_read_back(heap_available, buffers, size):
    buffer = alloc_heap(size, name="rw")
    buffers.append(buffer)
    data = pattern(buffer.size, 3)
    buffer.sync(start=True, read=False, write=True)
    with buffer.mmap() as mapping:
        mapping[:] = data
    buffer.sync(start=False, read=False, write=True)
    buffer.sync(start=True, read=True, write=False)
    with buffer.mmap(access=mmap.ACCESS_READ) as again:
        assert again[:] == data
    buffer.sync(start=False, read=True, write=False)


@pytest.mark.parametrize("size", [PAGE, 1 << 20])
def test_udmabuf_and_memfd_share_pages(udmabuf_available, buffers, size):
    buffer = alloc_udmabuf(size, name="shared")
    buffers.append(buffer)
    through_memfd = pattern(buffer.size, 5)
    # Loading a udmabuf means writing its memfd: the dma-buf must see it.
    os.pwrite(buffer.memfd, through_memfd, 0)
    with buffer.mmap() as mapping:
        assert mapping[:] == through_memfd
        through_dmabuf = pattern(buffer.size, 9)
        mapping[:] = through_dmabuf
    assert os.pread(buffer.memfd, buffer.size, 0) == through_dmabuf
    with buffer.mmap_memfd() as memfd_mapping:
        assert memfd_mapping[:PAGE] == through_dmabuf[:PAGE]


def test_udmabuf_refuses_a_private_mapping(udmabuf_available, buffers):
    buffer = alloc_udmabuf(PAGE)
    buffers.append(buffer)
    with pytest.raises(OSError) as raised:
        mmap.mmap(buffer.fd, PAGE, mmap.MAP_PRIVATE)
    assert raised.value.errno == errno.EINVAL


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_hostile_name_survives_raw(both_available, buffers, hostile):
    buffer = alloc_heap(PAGE, name=hostile)
    buffers.append(buffer)
    # fdinfo prints the name as it is: no escaping, no truncation.
    assert b"\nname:\t" + hostile + b"\n" in fdinfo(buffer.fd)
    seen = ours(read_bufinfo(), {buffer.inode})[buffer.inode]
    expected = None if hostile == b"<none>" else hostile
    assert seen.name == expected
    assert (seen.size, seen.exporter, seen.devices) == (PAGE, "system", ())


def test_hostile_names_do_not_confuse_neighbours(both_available, buffers):
    for index, hostile in enumerate(HOSTILE_NAMES):
        buffers.append(alloc_udmabuf(PAGE * (index + 1), name=hostile))
    seen = ours(read_bufinfo(), {b.inode for b in buffers})
    assert len(seen) == len(HOSTILE_NAMES)
    for buffer in buffers:
        assert seen[buffer.inode].size == buffer.size
        assert seen[buffer.inode].exporter == "udmabuf"


def test_longest_name_is_31_bytes(heap_available, buffers):
    buffer = alloc_heap(PAGE, name=b"n" * 31)
    buffers.append(buffer)
    assert fdinfo_fields(buffer.fd)["name"] == b"n" * 31
    # The kernel refuses 32 bytes outright (strndup_user: -EINVAL), never truncates.
    with pytest.raises(OSError) as raised:
        fcntl.ioctl(buffer.fd, alloc.DMA_BUF_SET_NAME, bytearray(b"n" * 32 + b"\0"), True)
    assert raised.value.errno == errno.EINVAL
    assert fdinfo_fields(buffer.fd)["name"] == b"n" * 31
    with pytest.raises(alloc.InvalidName):
        buffer.set_name(b"n" * 32)


def test_both_set_name_numbers_work(heap_available, buffers):
    buffer = alloc_heap(PAGE)
    buffers.append(buffer)
    for number, name in ((alloc.DMA_BUF_SET_NAME_A, b"via-A"), (alloc.DMA_BUF_SET_NAME_B, b"via-B")):
        fcntl.ioctl(buffer.fd, number, bytearray(name + b"\0"), True)
        assert fdinfo_fields(buffer.fd)["name"] == name


def test_rename_replaces(heap_available, buffers):
    buffer = alloc_heap(PAGE, name="first")
    buffers.append(buffer)
    set_name(buffer.fd, "second")
    assert fdinfo_fields(buffer.fd)["name"] == b"second"


# --- limits ---------------------------------------------------------------------------


def test_udmabuf_over_limit_is_a_clear_error(udmabuf_available):
    limit = alloc.udmabuf_size_limit()
    with pytest.raises(alloc.DmabufTopError, match="limit"):
        alloc_udmabuf(limit + PAGE)


def test_context_manager_frees(both_available):
    with alloc_heap(PAGE, name="ctx") as buffer:
        inode = buffer.inode
        assert inode in ours(read_bufinfo(), {inode})
    assert buffer.closed
    assert ours(read_bufinfo(), {inode}) == {}
