"""io_uring reads through the raw syscalls (ctypes), for guest tests: no liburing headers on these machines.

One ring, one IORING_OP_READ in flight at a time, completed before the next is queued: enough to make
the kernel's io_uring read path (inline with IOCB_NOWAIT, or punted to an iou-wrk thread) do the I/O.
Layouts from include/uapi/linux/io_uring.h.
"""
import ctypes
import mmap
import os
import struct

# The uAPI's numbers and layouts are the library's (dmabuf_top/validate/uring.py); this ring adds what only the tests
# drive: READV/WRITEV, SQPOLL and the write opcodes.
from dmabuf_top.validate.uring import (  # noqa: F401  (re-exported for the tests that import them from here)
    CQE,
    IORING_ENTER_GETEVENTS,
    IORING_OFF_CQ_RING,
    IORING_OFF_SQ_RING,
    IORING_OFF_SQES,
    IORING_OP_READ,
    IORING_OP_READ_FIXED,
    IORING_REGISTER_BUFFERS,
    SQE_SIZE,
    SYS_IO_URING_ENTER,
    SYS_IO_URING_REGISTER,
    SYS_IO_URING_SETUP,
    _Iovec,
    _Params,
    _u32,
)
from dmabuf_top.validate.uring import SQE as SQE_HEAD  # noqa: F401

IORING_OP_READV = 1
IORING_OP_WRITEV = 2
IORING_OP_WRITE_FIXED = 5
IORING_OP_WRITE = 23
IORING_ENTER_SQ_WAKEUP = 2
IORING_SETUP_SQPOLL = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Ring:
    """flags: io_uring_setup flags (IORING_SETUP_SQPOLL: a kernel thread of this process submits the SQEs)."""

    def __init__(self, entries=4, flags=0):
        params = _Params(flags=flags, sq_thread_idle=1000)
        fd = _libc.syscall(SYS_IO_URING_SETUP, entries, ctypes.byref(params))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "io_uring_setup")
        self.fd, self.p, self.flags = fd, params, flags
        self._iovec = _Iovec()  # READV's one iovec: it must live until the request completes
        self.sq = mmap.mmap(fd, params.sq_off.array + params.sq_entries * 4, offset=IORING_OFF_SQ_RING)
        self.cq = mmap.mmap(fd, params.cq_off.cqes + params.cq_entries * CQE.size, offset=IORING_OFF_CQ_RING)
        self.sqes = mmap.mmap(fd, params.sq_entries * SQE_SIZE, offset=IORING_OFF_SQES)

    def register_buffer(self, address, length):
        """IORING_REGISTER_BUFFERS with one buffer (index 0), for READ_FIXED/WRITE_FIXED."""
        iov = _Iovec(address, length)
        if _libc.syscall(SYS_IO_URING_REGISTER, self.fd, IORING_REGISTER_BUFFERS, ctypes.byref(iov), 1) < 0:
            raise OSError(ctypes.get_errno(), "io_uring_register")

    def read(self, fd, address, length, offset, opcode=IORING_OP_READ):
        """One request (IORING_OP_READ, or READV/READ_FIXED/WRITE...), submitted and waited for: the CQE's result
        (bytes, or -errno). READV/WRITEV get one iovec over [address, address + length)."""
        return self.submit_and_wait(opcode, fd, address, length, offset)

    def submit_and_wait(self, opcode, fd, address, length, offset, buf_index=0):
        """One read-like SQE (opcode, fd, off, addr, len; buf_index for the *_FIXED opcodes), submitted and
        waited for: the CQE's result (bytes, or -errno)."""
        p = self.p
        tail = _u32(self.sq, p.sq_off.tail)
        index = tail & _u32(self.sq, p.sq_off.ring_mask)
        if opcode in (IORING_OP_READV, IORING_OP_WRITEV):
            self._iovec.iov_base, self._iovec.iov_len = address, length
            address, length = ctypes.addressof(self._iovec), 1
        sqe = SQE_HEAD.pack(opcode, 0, 0, fd, offset, address, length, 0, 0x5151, buf_index)
        self.sqes[index * SQE_SIZE:(index + 1) * SQE_SIZE] = sqe.ljust(SQE_SIZE, b"\0")
        struct.pack_into("<I", self.sq, p.sq_off.array + index * 4, index)
        struct.pack_into("<I", self.sq, p.sq_off.tail, (tail + 1) & 0xFFFFFFFF)  # x86: stores are ordered
        # With SQPOLL the ring's thread submits (woken if it idles); io_uring_enter only waits for the CQE.
        flags = IORING_ENTER_GETEVENTS | (IORING_ENTER_SQ_WAKEUP if self.flags & IORING_SETUP_SQPOLL else 0)
        done = _libc.syscall(SYS_IO_URING_ENTER, self.fd, 1, 1, flags, None, 0)
        if done < 0:
            raise OSError(ctypes.get_errno(), "io_uring_enter")
        head = _u32(self.cq, p.cq_off.head)
        if head == _u32(self.cq, p.cq_off.tail):
            raise OSError("io_uring_enter returned without a completion")
        slot = head & _u32(self.cq, p.cq_off.ring_mask)
        user_data, res, _flags = CQE.unpack_from(self.cq, p.cq_off.cqes + slot * CQE.size)
        assert user_data == 0x5151
        struct.pack_into("<I", self.cq, p.cq_off.head, (head + 1) & 0xFFFFFFFF)
        return res

    def read_fully(self, fd, address, length, chunk=4 << 20, opcode=IORING_OP_READ):
        done = 0
        while done < length:
            got = self.read(fd, address + done, min(chunk, length - done), done, opcode)
            if got <= 0:
                raise OSError(-got if got < 0 else 0, f"io_uring read at {done} returned {got}")
            done += got
        return done

    def close(self):
        for region in (self.sqes, self.cq, self.sq):
            region.close()
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
