"""io_uring reads through the raw syscalls (ctypes), for the tests: no liburing headers on these machines.

The ring, the uAPI's numbers and layouts are the library's (dmabuf_top/validate/uring.py, one request in flight
at a time); this ring adds what only the tests drive: READV/WRITEV (one iovec), the write opcodes, one registered
buffer, and a read_fully that takes an opcode and fails at the end of the file.
"""
import ctypes

from dmabuf_top.validate import uring
from dmabuf_top.validate.uring import (  # noqa: F401  (re-exported for the tests that import them from here)
    IORING_OP_READ,
    IORING_OP_READ_FIXED,
    IORING_SETUP_SQPOLL,
    _Iovec,
)
from dmabuf_top.validate.uring import SQE as SQE_HEAD  # noqa: F401

IORING_OP_READV = 1
IORING_OP_WRITEV = 2
IORING_OP_WRITE_FIXED = 5
IORING_OP_WRITE = 23


class Ring(uring.Ring):
    def __init__(self, entries=4, flags=0):
        super().__init__(entries, flags)
        self._iovec = _Iovec()  # READV's one iovec: it must live until the request completes

    def register_buffer(self, address, length):
        """IORING_REGISTER_BUFFERS with one buffer (index 0), for READ_FIXED/WRITE_FIXED."""
        self.register_buffers([(address, length)])

    def read(self, fd, address, length, offset, opcode=IORING_OP_READ):
        """One request (IORING_OP_READ, or READV/READ_FIXED/WRITE...), submitted and waited for: the CQE's result
        (bytes, or -errno). READV/WRITEV get one iovec over [address, address + length)."""
        if opcode in (IORING_OP_READV, IORING_OP_WRITEV):
            self._iovec.iov_base, self._iovec.iov_len = address, length
            address, length = ctypes.addressof(self._iovec), 1
        return self.submit_and_wait(opcode, fd, address, length, offset)

    def read_fully(self, fd, address, length, chunk=4 << 20, opcode=IORING_OP_READ):
        done = 0
        while done < length:
            got = self.read(fd, address + done, min(chunk, length - done), done, opcode)
            if got <= 0:
                raise OSError(-got if got < 0 else 0, f"io_uring read at {done} returned {got}")
            done += got
        return done
