"""A user's loader whose memfd pages change frames after the device wrote them, for `validate -- CMD` tests.

    python tests/memfd_moves.py FILE collapse|punch-and-copy|partial-punch-and-copy|truncate-and-copy
                                     |punch-copy-udmabuf|collapse-copy-udmabuf

Both read FILE with O_DIRECT into a memfd mapping (the device writes into the memfd's own pages), then:
- collapse: MADV_COLLAPSE makes the memfd's pages one huge page, so the kernel copies them into new frames
  (as compaction, khugepaged or swap may do at any time on a busy machine): still a zero-copy load;
- punch-and-copy: copies the bytes out, punches the memfd's pages away and copies them back in, so the buffer
  ends with the right bytes in pages the device never wrote: a load built to look zero-copy that is not;
- partial-punch-and-copy: punches 512 bytes inside every page (zeroed in place: no page leaves the memfd) and
  copies them back: those bytes came by a copy, into pages the device did write;
- truncate-and-copy: ftruncate to 0 and back, then copies the bytes back in;
- punch-copy-udmabuf: punch-and-copy, then a udmabuf over the memfd (where /dev/udmabuf exists): its pages are
  the refilled ones, often in the very frames the device wrote.
- collapse-copy-udmabuf: the device writes a tmpfs file A (/dev/shm/memfd-moves-a, left behind: no memfd, so no
  buffer of the command), MADV_COLLAPSE moves A's pages and frees the frames the device wrote; then a fresh memfd
  B is filled by a memcpy from A and a udmabuf is made over B: B's pages often take the frames A left, so a match
  by frame credits the copy to the device. Prints how many of B's pages are in frames the device wrote for A.
Prints how many of the mapping's pages are in other frames than the device wrote (read as root).
"""
import ctypes
import fcntl
import os
import struct
import sys

PAGE = 4096
HUGE = 2 << 20
MADV_COLLAPSE = 25
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
PROT_READ_WRITE, MAP_SHARED, MAP_PRIVATE_ANONYMOUS, MAP_FIXED = 3, 0x01, 0x22, 0x10

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)
libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


def frames(address, size):
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(address // PAGE * 8)
        raw = pagemap.read(size // PAGE * 8)
    return [entry & ((1 << 55) - 1) for (entry,) in struct.iter_unpack("<Q", raw)]


def checked(value, doing):
    if value in (-1, None) or (isinstance(value, int) and value < 0):
        error = ctypes.get_errno()
        raise OSError(error, f"{doing}: {os.strerror(error)}")
    return value


def wrap_in_udmabuf(memfd, size):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from dmabuf_top import alloc  # the project's udmabuf request layout

    fcntl.fcntl(memfd, alloc.F_ADD_SEALS, alloc.F_SEAL_SHRINK)
    device = os.open(alloc.UDMABUF_DEVICE, os.O_RDWR)
    try:
        request = bytearray(alloc.UDMABUF_CREATE_STRUCT.pack(memfd, alloc.UDMABUF_FLAGS_CLOEXEC, 0, size))
        return fcntl.ioctl(device, alloc.UDMABUF_CREATE, request, True)
    finally:
        os.close(device)


FILE_A = "/dev/shm/memfd-moves-a"  # collapse-copy-udmabuf's file A, left behind for the caller to remove


def first_file(mode):
    """The file the device writes: a memfd, or for collapse-copy-udmabuf a tmpfs file that is none (validate takes
    a command's memfds and dma-bufs as its buffers; A must not be one, only the frames it leaves matter). A outlives
    this process: freed at its exit, its pages would leave it, and the probe forget their places before validate
    judges."""
    if mode == "collapse-copy-udmabuf":
        return os.open(FILE_A, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o600)
    return os.memfd_create("memfd-moves", os.MFD_ALLOW_SEALING)


def copy_into_fresh_memfd(source, size):
    """A new memfd B mapped and filled by a memcpy from `source` (its pages are allocated as the copy faults them
    in): (its fd, its mapping's address)."""
    memfd = os.memfd_create("memfd-moves-b", os.MFD_ALLOW_SEALING)
    os.ftruncate(memfd, size)
    address = checked(libc.mmap(None, size, PROT_READ_WRITE, MAP_SHARED, memfd, 0), "mmap of memfd B")
    ctypes.memmove(address, source, size)
    return memfd, address


def main(argv):
    path, mode = argv
    size = os.stat(path).st_size
    memfd = first_file(mode)
    os.ftruncate(memfd, size)
    # At a huge-page boundary, so that MADV_COLLAPSE can make the range one huge page.
    reserved = checked(libc.mmap(None, size + HUGE, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0), "mmap")
    address = checked(libc.mmap((reserved + HUGE - 1) & ~(HUGE - 1), size, PROT_READ_WRITE, MAP_SHARED | MAP_FIXED,
                                memfd, 0), "mmap of the memfd")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        moved = checked(libc.pread(fd, address, size, 0), "pread")
    finally:
        os.close(fd)
    written = frames(address, size)
    copied = None
    if mode == "collapse":
        checked(libc.madvise(address, size, MADV_COLLAPSE), "madvise(MADV_COLLAPSE)")
    elif mode == "collapse-copy-udmabuf":
        checked(libc.madvise(address, size, MADV_COLLAPSE), "madvise(MADV_COLLAPSE)")
        copied, copied_address = copy_into_fresh_memfd(address, size)
    elif mode in ("punch-and-copy", "punch-copy-udmabuf"):
        copy = ctypes.string_at(address, size)
        checked(libc.fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, size), "fallocate(PUNCH_HOLE)")
        ctypes.memmove(address, copy, size)
    elif mode == "partial-punch-and-copy":
        copy = ctypes.string_at(address, size)
        for page in range(0, size, PAGE):
            checked(libc.fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, page + 1024, 512),
                    "fallocate(PUNCH_HOLE)")
        ctypes.memmove(address, copy, size)
    elif mode == "truncate-and-copy":
        copy = ctypes.string_at(address, size)
        os.ftruncate(memfd, 0)
        os.ftruncate(memfd, size)
        ctypes.memmove(address, copy, size)
    else:
        raise SystemExit(f"unknown mode {mode!r}: see this file's docstring")
    if mode == "punch-copy-udmabuf":
        udmabuf = wrap_in_udmabuf(memfd, size)  # noqa: F841  (held open until exit: validate takes it)
    if copied is not None:
        udmabuf = wrap_in_udmabuf(copied, size)  # noqa: F841  (held open until exit: validate takes it)
        reused = set(written) & set(frames(copied_address, size))
        print(f"memfd B: {len(reused)} of {size // PAGE} pages in frames the device wrote for file A")
    now = frames(address, size)
    print(f"memfd {mode}: read {moved} of {size} bytes; {sum(a != b for a, b in zip(written, now))} of "
          f"{len(now)} pages in other frames than the device wrote")
    expected = open(path, "rb").read()
    if ctypes.string_at(address, size) != expected:
        raise SystemExit("the memfd does not hold the file's bytes")
    if copied is not None and ctypes.string_at(copied_address, size) != expected:
        raise SystemExit("memfd B does not hold the file's bytes")
    return 0 if moved == size else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
