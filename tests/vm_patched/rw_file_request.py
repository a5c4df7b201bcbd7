"""DMA_BUF_IOCTL_RW_FILE from a test: the request packed as kernel/patches/README says."""
import fcntl

from dmabuf_top.validate.methods import DMA_BUF_IOCTL_RW_FILE, RW_FILE_STRUCT

SCRATCH = "/mnt/scratch"
PAGE = 4096


def rw_file(dmabuf_fd, fd, flags, file_offset, buf_offset, length):
    """The ioctl's return value (bytes moved); OSError with the kernel's errno otherwise."""
    request = bytearray(RW_FILE_STRUCT.pack(fd, flags, file_offset, buf_offset, length))
    return fcntl.ioctl(dmabuf_fd, DMA_BUF_IOCTL_RW_FILE, request, True)
