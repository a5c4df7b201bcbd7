"""DMA_BUF_IOCTL_RW_FILE from a test: the request packed as kernel/series/rw-file/README says."""
import fcntl
import os
from contextlib import contextmanager

from dmabuf_top.validate.methods import DMA_BUF_IOCTL_RW_FILE, RW_FILE_STRUCT

SCRATCH = "/mnt/scratch"
PAGE = 4096


def rw_file(dmabuf_fd, fd, flags, file_offset, buf_offset, length):
    """The ioctl's return value (bytes moved); OSError with the kernel's errno otherwise."""
    request = bytearray(RW_FILE_STRUCT.pack(fd, flags, file_offset, buf_offset, length))
    return fcntl.ioctl(dmabuf_fd, DMA_BUF_IOCTL_RW_FILE, request, True)


@contextmanager
def scratch_file(name, size):
    """(path, bytes) of a file of random bytes on the scratch ext4, on disk (fsync'ed), removed afterwards."""
    data = os.urandom(size)
    path = os.path.join(SCRATCH, name)
    with open(path, "wb") as out:
        out.write(data)
        os.fsync(out.fileno())
    try:
        yield path, data
    finally:
        os.unlink(path)
