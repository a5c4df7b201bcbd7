"""What the guest tests that read files into buffers share: a random file on the lab's scratch disk (NVMe, ext4),
the page cache dropped, a mapping's address. tests/vm is on sys.path (its conftest; no packages)."""
import contextlib
import ctypes
import hashlib
import os

import pytest

SCRATCH = "/mnt/scratch"
WRITE_CHUNK = 4 << 20
# libc's read/pread/memmove: the bytes land at a mapping's own address (Python's os.read would copy them).
libc = ctypes.CDLL(None, use_errno=True)
libc.read.restype = ctypes.c_ssize_t
libc.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)
libc.memmove.restype = ctypes.c_void_p
libc.memmove.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


@contextlib.contextmanager
def random_file(name, size):
    """`size` random bytes in SCRATCH/name, on the disk (fsync), as (path, sha256 hex digest); removed after."""
    if not os.path.ismount(SCRATCH):
        pytest.fail(f"{SCRATCH} is not mounted: this suite runs inside `dmabuf-top vm`")
    path = os.path.join(SCRATCH, name)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for at in range(0, size, WRITE_CHUNK):
            chunk = os.urandom(min(WRITE_CHUNK, size - at))
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    try:
        yield path, digest.hexdigest()
    finally:
        os.unlink(path)


def drop_caches():
    """The page cache emptied, so a read must reach the device."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as control:
        control.write("3\n")


def address_of(mapping):
    return ctypes.addressof(ctypes.c_char.from_buffer(mapping))
