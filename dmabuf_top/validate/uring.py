"""io_uring reads through the raw syscalls (ctypes), for the loaders validate compares: no liburing needed.

A Ring keeps one read in flight at a time, completed before the next is queued: enough to make the kernel's
io_uring read path (inline with IOCB_NOWAIT, or punted to an iou-wrk thread of the same process) do the I/O.
`register_buffers` + `read_fixed` are IORING_REGISTER_BUFFERS and IORING_OP_READ_FIXED: the kernel pins the
registered memory once (io_sqe_buffer_register -> pin_user_pages) and each read uses those pages without
pinning again, the shape of loaders that reuse one staging buffer. Layouts from include/uapi/linux/io_uring.h.
"""
import ctypes
import errno
import mmap
import os
import struct
from typing import Optional, Sequence, Tuple

SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_IO_URING_REGISTER = 427
IORING_OP_READ_FIXED = 4
IORING_OP_READ = 22
IORING_ENTER_GETEVENTS = 1
IORING_ENTER_SQ_WAKEUP = 2
IORING_SETUP_SQPOLL = 2
IORING_REGISTER_BUFFERS = 0
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
SQE_SIZE = 64
# opcode, flags, ioprio, fd, off, addr, len, rw_flags, user_data, buf_index (the rest of the 64 bytes is zero)
SQE = struct.Struct("<BBHiQQIIQH")
CQE = struct.Struct("<QiI")  # user_data, res, flags
USER_DATA = 0x5151

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _SqOffsets(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in
                ("head", "tail", "ring_mask", "ring_entries", "flags", "dropped", "array", "resv1")] + [
        ("user_addr", ctypes.c_uint64)]


class _CqOffsets(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in
                ("head", "tail", "ring_mask", "ring_entries", "overflow", "cqes", "flags", "resv1")] + [
        ("user_addr", ctypes.c_uint64)]


class _Params(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in
                ("sq_entries", "cq_entries", "flags", "sq_thread_cpu", "sq_thread_idle", "features", "wq_fd")] + [
        ("resv", ctypes.c_uint32 * 3), ("sq_off", _SqOffsets), ("cq_off", _CqOffsets)]


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


assert ctypes.sizeof(_Params) == 120


def _u32(ring, offset):
    return struct.unpack_from("<I", ring, offset)[0]


def _raise(what):
    number = ctypes.get_errno()
    raise OSError(number, f"{what}: {os.strerror(number)}")


class Ring:
    """flags: io_uring_setup's (IORING_SETUP_SQPOLL: a kernel thread of this process submits the SQEs)."""

    def __init__(self, entries=4, flags=0):
        params = _Params(flags=flags, sq_thread_idle=1000)
        fd = _libc.syscall(SYS_IO_URING_SETUP, entries, ctypes.byref(params))
        if fd < 0:
            _raise("io_uring_setup")
        self.fd, self.p, self.flags = fd, params, flags
        try:
            self.sq = mmap.mmap(fd, params.sq_off.array + params.sq_entries * 4, offset=IORING_OFF_SQ_RING)
            self.cq = mmap.mmap(fd, params.cq_off.cqes + params.cq_entries * CQE.size, offset=IORING_OFF_CQ_RING)
            self.sqes = mmap.mmap(fd, params.sq_entries * SQE_SIZE, offset=IORING_OFF_SQES)
        except BaseException:
            os.close(fd)
            raise

    def register_buffers(self, regions: Sequence[Tuple[int, int]]):
        """IORING_REGISTER_BUFFERS over [(address, length)]: buffer index i is regions[i]. Raises OSError with
        the kernel's errno (EFAULT: memory pin_user_pages refuses, such as a dma-buf's VM_PFNMAP mapping)."""
        iovecs = (_Iovec * len(regions))(*[_Iovec(address, length) for address, length in regions])
        if _libc.syscall(SYS_IO_URING_REGISTER, self.fd, IORING_REGISTER_BUFFERS, iovecs, len(regions)) < 0:
            _raise("io_uring_register(IORING_REGISTER_BUFFERS)")

    def submit_and_wait(self, opcode, fd, address, length, offset, buf_index=0):
        """One read-like SQE (opcode, fd, off, addr, len; buf_index for the *_FIXED opcodes), submitted and waited
        for: the CQE's result (bytes, or -errno)."""
        p = self.p
        tail = _u32(self.sq, p.sq_off.tail)
        index = tail & _u32(self.sq, p.sq_off.ring_mask)
        sqe = SQE.pack(opcode, 0, 0, fd, offset, address, length, 0, USER_DATA, buf_index)
        self.sqes[index * SQE_SIZE:(index + 1) * SQE_SIZE] = sqe.ljust(SQE_SIZE, b"\0")
        struct.pack_into("<I", self.sq, p.sq_off.array + index * 4, index)
        struct.pack_into("<I", self.sq, p.sq_off.tail, (tail + 1) & 0xFFFFFFFF)  # x86: stores are ordered
        # With SQPOLL the ring's thread submits (woken if it idles); io_uring_enter only waits for the CQE.
        flags = IORING_ENTER_GETEVENTS | (IORING_ENTER_SQ_WAKEUP if self.flags & IORING_SETUP_SQPOLL else 0)
        if _libc.syscall(SYS_IO_URING_ENTER, self.fd, 1, 1, flags, None, 0) < 0:
            _raise("io_uring_enter")
        head = _u32(self.cq, p.cq_off.head)
        if head == _u32(self.cq, p.cq_off.tail):
            raise OSError(errno.EIO, "io_uring_enter returned without a completion")
        slot = head & _u32(self.cq, p.cq_off.ring_mask)
        user_data, res, _flags = CQE.unpack_from(self.cq, p.cq_off.cqes + slot * CQE.size)
        struct.pack_into("<I", self.cq, p.cq_off.head, (head + 1) & 0xFFFFFFFF)
        if user_data != USER_DATA:
            raise OSError(errno.EIO, f"io_uring completed an unknown request {user_data:#x}")
        return res

    def read(self, fd, address, length, offset):
        return self.submit_and_wait(IORING_OP_READ, fd, address, length, offset)

    def read_fixed(self, fd, address, length, offset, buf_index=0):
        """IORING_OP_READ_FIXED into registered buffer `buf_index` (address must lie inside it)."""
        return self.submit_and_wait(IORING_OP_READ_FIXED, fd, address, length, offset, buf_index)

    def read_fully(self, fd, address, length, chunk=4 << 20, fixed: Optional[int] = None):
        """Reads [0, length) of fd into address, chunk by chunk (READ_FIXED into buffer `fixed` if given)."""
        done = 0
        while done < length:
            want = min(chunk, length - done)
            if fixed is None:
                got = self.read(fd, address + done, want, done)
            else:
                got = self.read_fixed(fd, address + done, want, done, fixed)
            if got < 0:
                raise OSError(-got, f"io_uring read at {done}: {os.strerror(-got)}")
            if got == 0:
                break
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


def fixed_buffers_answer() -> Optional[str]:
    """None if io_uring with registered buffers works here, else why not (a ring and one page, tried)."""
    page = ctypes.create_string_buffer(mmap.PAGESIZE)  # ordinary heap memory: pinnable
    try:
        with Ring() as ring:
            ring.register_buffers([(ctypes.addressof(page), mmap.PAGESIZE)])
    except OSError as error:
        name = errno.errorcode.get(error.errno, error.errno)
        return f"absent on this kernel ({str(error.strerror).split(':')[0]} answers {name})"
    return None
