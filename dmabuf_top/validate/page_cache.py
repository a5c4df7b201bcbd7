"""The test file's page cache: drop it before a method, and say how much of it is still there.

A method's DMA evidence counts what the device wrote for its reads; a page of the file left in
the cache was never read from the device, so the evidence would fall short of the payload for a
reason that has nothing to do with the method. Dropping is not certain (a page under I/O, still
mapped, or held in a CPU's LRU batch is skipped), so the runner asks the kernel afterwards how
many pages are left (cachestat(2), 6.5+; mincore(2) over a mapping before that), tries again, and
reports what it could not drop instead of presuming a cold cache.
"""
import ctypes
import errno
import os
import time

from ..errors import NeedsPrivilege

SYS_CACHESTAT = 451  # the same number on x86_64 and arm64 (the generic table)
ATTEMPTS = 5
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PROT_READ, MAP_SHARED = 0x1, 0x01
MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [("nr_cache", ctypes.c_uint64), ("nr_dirty", ctypes.c_uint64), ("nr_writeback", ctypes.c_uint64),
                ("nr_evicted", ctypes.c_uint64), ("nr_recently_evicted", ctypes.c_uint64)]


def _error(name):
    err = ctypes.get_errno()
    return OSError(err, f"{name}: {os.strerror(err)}")


def _cachestat_pages(fd):
    """Pages of the whole file in the page cache, or None when the kernel has no cachestat."""
    whole = _CachestatRange(0, 0)  # len 0: to the end of the file
    stat = _Cachestat()
    if _libc.syscall(ctypes.c_long(SYS_CACHESTAT), ctypes.c_uint(fd), ctypes.byref(whole), ctypes.byref(stat),
                     ctypes.c_uint(0)) == 0:
        return stat.nr_cache
    if ctypes.get_errno() == errno.ENOSYS:
        return None
    raise _error("cachestat")


def _mincore_pages(fd, size):
    """Pages of the file in the page cache, by mincore over a read-only shared mapping (mapping faults nothing)."""
    if size == 0:
        return 0
    address = _libc.mmap(None, size, PROT_READ, MAP_SHARED, fd, 0)
    if address in (None, MAP_FAILED):
        raise _error("mmap")
    try:
        vector = ctypes.create_string_buffer((size + PAGE_SIZE - 1) // PAGE_SIZE)
        if _libc.mincore(address, size, vector) != 0:
            raise _error("mincore")
        return sum(byte & 1 for byte in vector.raw)
    finally:
        _libc.munmap(address, size)


def cached_bytes(path) -> int:
    """Bytes of the file at path that are in the page cache now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pages = _cachestat_pages(fd)
        if pages is None:
            pages = _mincore_pages(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return pages * PAGE_SIZE


def _drop_once(path):
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3\n")
    except PermissionError:
        raise NeedsPrivilege("dropping the page cache needs root: run as root, or pass --warm") from None
    fd = os.open(path, os.O_RDONLY)
    try:
        # DONTNEED drains the CPUs' LRU batches and tries again itself, which drop_caches does not.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_page_cache(path) -> int:
    """Write back, then drop the page cache (all of it, and this file's by fadvise) until none of the file is
    left, a few times at most. Returns the bytes of the file still cached (0: the next read starts cold)."""
    left = 0
    for attempt in range(ATTEMPTS):
        _drop_once(path)
        left = cached_bytes(path)
        if not left:
            return 0
        time.sleep(0.02 * (attempt + 1))  # a page under I/O or still mapped may be free a moment later
    return left
