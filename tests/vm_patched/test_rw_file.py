"""DMA_BUF_IOCTL_RW_FILE on the patched lab kernel: every promise of kernel/series/rw-file/README, on real
heap and udmabuf buffers and a real ext4 file on NVMe, with the bytes checked."""
import errno
import fcntl
import mmap
import os

import pytest
from rw_file_request import PAGE, SCRATCH, rw_file, scratch_file

from dmabuf_top import alloc
from dmabuf_top.validate.methods import RW_FILE_DIRECT, RW_FILE_READ, RW_FILE_WRITE

pytestmark = pytest.mark.guest

SIZE = 4 << 20


@pytest.fixture(scope="module")
def source():
    with scratch_file("rw-file-source.bin", SIZE) as made:
        yield made


@pytest.fixture
def opened(source):
    """(the source file open read-only, its bytes)."""
    path, data = source
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def read_flags(direct):
    return RW_FILE_READ | (RW_FILE_DIRECT if direct else 0)


def contents(dmabuf):
    with mmap.mmap(dmabuf.fd, dmabuf.size) as view:
        return bytes(view)


@pytest.mark.parametrize("direct_how", ["buffered", "flag", "o_direct"])
def test_heap_read_fills_the_buffer_with_the_file(source, direct_how):
    path, data = source
    flags = RW_FILE_READ | (RW_FILE_DIRECT if direct_how == "flag" else 0)
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct_how == "o_direct" else 0))
    try:
        with alloc.alloc_heap(SIZE) as dmabuf:
            assert rw_file(dmabuf.fd, fd, flags, 0, 0, SIZE) == SIZE
            assert contents(dmabuf) == data
    finally:
        os.close(fd)


@pytest.mark.parametrize("direct", [False, True])
def test_offsets_place_the_bytes_and_leave_the_rest(opened, direct):
    fd, data = opened
    with alloc.alloc_heap(SIZE) as dmabuf:
        # Crosses the heap's 1 MiB chunks: starts in the first, ends in the third.
        start, length = (1 << 20) - 2 * PAGE, (1 << 20) + 5 * PAGE
        assert rw_file(dmabuf.fd, fd, read_flags(direct), 3 * PAGE, start, length) == length
        got = contents(dmabuf)
    assert got[start:start + length] == data[3 * PAGE:3 * PAGE + length]
    assert got[:start] == bytes(start) and got[start + length:] == bytes(SIZE - start - length)


def test_a_read_past_the_end_of_the_file_is_short_and_a_zero_length_moves_nothing(opened):
    fd, data = opened
    with alloc.alloc_heap(2 * PAGE) as dmabuf:
        assert rw_file(dmabuf.fd, fd, RW_FILE_READ, SIZE - 1000, 0, 2 * PAGE) == 1000
        assert rw_file(dmabuf.fd, fd, RW_FILE_READ, SIZE, 0, PAGE) == 0
        assert rw_file(dmabuf.fd, fd, RW_FILE_READ, 0, PAGE, 0) == 0
        assert contents(dmabuf)[:1000] == data[-1000:]


@pytest.mark.parametrize("direct", [False, True])
def test_write_puts_the_buffer_into_a_file(opened, direct):
    fd, data = opened
    target = os.path.join(SCRATCH, f"rw-file-written-{int(direct)}.bin")
    out = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with alloc.alloc_heap(SIZE) as dmabuf:
            assert rw_file(dmabuf.fd, fd, RW_FILE_READ, 0, 0, SIZE) == SIZE
            flags = RW_FILE_WRITE | (RW_FILE_DIRECT if direct else 0)
            assert rw_file(dmabuf.fd, out, flags, PAGE, 0, SIZE) == SIZE
        os.fsync(out)
        assert os.fstat(out).st_size == PAGE + SIZE
        assert os.pread(out, SIZE, PAGE) == data
        assert os.lseek(out, 0, os.SEEK_CUR) == 0  # like pwrite: the file position is not used
    finally:
        os.close(out)
        os.unlink(target)


@pytest.mark.parametrize("direct", [False, True])
def test_udmabuf_read_lands_in_the_memfd_pages(opened, direct):
    fd, data = opened
    with alloc.alloc_udmabuf(SIZE) as dmabuf:
        assert rw_file(dmabuf.fd, fd, read_flags(direct), 0, 0, SIZE) == SIZE
        with dmabuf.mmap_memfd() as view:
            assert bytes(view) == data


def _errno_of(call):
    with pytest.raises(OSError) as raised:
        call()
    return errno.errorcode[raised.value.errno]


def test_refusals_carry_the_documented_errors(opened):
    fd, _ = opened
    write_only = os.open(os.path.join(SCRATCH, "rw-file-wo.bin"), os.O_WRONLY | os.O_CREAT, 0o600)
    pipe_read, pipe_write = os.pipe()
    try:
        with alloc.alloc_heap(4 * PAGE) as dmabuf, alloc.alloc_heap(PAGE) as other:
            cases = {
                "no direction": (fd, 0, 0, 0, PAGE),
                "both directions": (fd, RW_FILE_READ | RW_FILE_WRITE, 0, 0, PAGE),
                "unknown flag": (fd, RW_FILE_READ | (1 << 3), 0, 0, PAGE),
                "past the buffer": (fd, RW_FILE_READ, 0, 4 * PAGE, 1),
                "longer than the buffer": (fd, RW_FILE_READ, 0, 0, 4 * PAGE + 1),
                "offset overflow": (fd, RW_FILE_READ, 0, 2**64 - PAGE, 2 * PAGE),
                "a dma-buf as the file": (other.fd, RW_FILE_READ, 0, 0, PAGE),
                "negative file offset": (fd, RW_FILE_READ, 2**63, 0, PAGE),
                "direct I/O from a pipe": (pipe_read, RW_FILE_READ | RW_FILE_DIRECT, 0, 0, PAGE),
                # ext4_dio_alignment -> 1 (iomap defaults): iomap_dio_bio_iter wants the logical block size.
                "misaligned direct I/O": (fd, RW_FILE_READ | RW_FILE_DIRECT, 513, 0, PAGE),
            }
            for what, args in cases.items():
                assert _errno_of(lambda args=args: rw_file(dmabuf.fd, *args)) == "EINVAL", what
            assert _errno_of(lambda: rw_file(dmabuf.fd, -1, RW_FILE_READ, 0, 0, PAGE)) == "EBADF"
            assert _errno_of(lambda: rw_file(dmabuf.fd, write_only, RW_FILE_READ, 0, 0, PAGE)) == "EBADF"
            assert _errno_of(lambda: rw_file(dmabuf.fd, fd, RW_FILE_WRITE, 0, 0, PAGE)) == "EBADF"
    finally:
        for extra in (write_only, pipe_read, pipe_write):
            os.close(extra)
        os.unlink(os.path.join(SCRATCH, "rw-file-wo.bin"))


def test_a_read_only_dma_buf_cannot_be_filled(opened):
    fd, _ = opened
    heap = os.open(os.path.join(alloc.DMA_HEAP_DIR, "system"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        request = bytearray(alloc.HEAP_ALLOCATION_DATA.pack(PAGE, 0, os.O_RDONLY | os.O_CLOEXEC, 0))
        fcntl.ioctl(heap, alloc.DMA_HEAP_IOCTL_ALLOC, request, True)
        read_only = alloc.HEAP_ALLOCATION_DATA.unpack(request)[1]
        try:
            assert _errno_of(lambda: rw_file(read_only, fd, RW_FILE_READ, 0, 0, PAGE)) == "EBADF"
            # Writing it out only reads the buffer: allowed.
            out = os.open(os.path.join(SCRATCH, "rw-file-ro.bin"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                assert rw_file(read_only, out, RW_FILE_WRITE, 0, 0, PAGE) == PAGE
                assert os.pread(out, PAGE, 0) == bytes(PAGE)
            finally:
                os.close(out)
                os.unlink(os.path.join(SCRATCH, "rw-file-ro.bin"))
        finally:
            os.close(read_only)
    finally:
        os.close(heap)


def test_other_dma_buf_ioctls_are_untouched():
    # DMA_BUF_IOCTL_SYNC and SET_NAME still answer as before; a number after ours is still ENOTTY.
    with alloc.alloc_heap(PAGE, name="rw-file") as dmabuf:
        fcntl.ioctl(dmabuf.fd, alloc._IOW("b", 0, 8), bytearray((1 | 2).to_bytes(8, "little")), True)
        with open(f"/proc/self/fdinfo/{dmabuf.fd}") as info:
            assert "name:\trw-file" in info.read()
        assert _errno_of(lambda: fcntl.ioctl(dmabuf.fd, alloc._IOW("b", 5, 32), bytearray(32), True)) == "ENOTTY"
