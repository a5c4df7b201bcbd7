"""Linux native AIO reads through the raw syscalls (ctypes): io_setup, io_submit(IOCB_CMD_PREAD), io_getevents.

The loader shape of libaio users (databases, some model loaders): several reads in flight at once. Opened
O_DIRECT, io_submit queues the bios and returns, the device DMAs into the (pinned) destination pages;
buffered, io_submit does the whole read inside the call (filemap_read: page cache, then a CPU copy).
Layouts from include/uapi/linux/aio_abi.h (x86_64, little-endian).
"""
import ctypes
import errno
import os
from typing import List, Optional, Tuple

SYS_IO_SETUP = 206
SYS_IO_DESTROY = 207
SYS_IO_GETEVENTS = 208
SYS_IO_SUBMIT = 209
IOCB_CMD_PREAD = 0
DEPTH = 4  # reads in flight

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Iocb(ctypes.Structure):
    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32), ("aio_rw_flags", ctypes.c_int32),
                ("aio_lio_opcode", ctypes.c_uint16), ("aio_reqprio", ctypes.c_int16), ("aio_fildes", ctypes.c_uint32),
                ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64), ("aio_offset", ctypes.c_int64),
                ("aio_reserved2", ctypes.c_uint64), ("aio_flags", ctypes.c_uint32), ("aio_resfd", ctypes.c_uint32)]


class IoEvent(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


assert ctypes.sizeof(Iocb) == 64 and ctypes.sizeof(IoEvent) == 32


def _raise(what):
    number = ctypes.get_errno()
    raise OSError(number, f"{what}: {os.strerror(number)}")


class AioContext:
    def __init__(self, depth=DEPTH):
        self.depth = depth
        self.ctx = ctypes.c_ulong(0)
        if _libc.syscall(SYS_IO_SETUP, depth, ctypes.byref(self.ctx)) < 0:
            _raise("io_setup")

    def pread_batch(self, fd, reads: List[Tuple[int, int, int]]) -> List[int]:
        """[(address, length, offset)] (at most depth) submitted together; their results (bytes or -errno)."""
        iocbs = (Iocb * len(reads))()
        for index, (address, length, offset) in enumerate(reads):
            iocbs[index] = Iocb(aio_data=index, aio_lio_opcode=IOCB_CMD_PREAD, aio_fildes=fd, aio_buf=address,
                                aio_nbytes=length, aio_offset=offset)
        pointers = (ctypes.POINTER(Iocb) * len(reads))(*[ctypes.pointer(iocbs[i]) for i in range(len(reads))])
        submitted = _libc.syscall(SYS_IO_SUBMIT, self.ctx, len(reads), pointers)
        if submitted < 0:
            _raise("io_submit")
        if submitted < len(reads):
            # Those submitted still complete: wait for them before saying so, or their DMA outlives the buffer.
            self._wait(submitted)
            raise OSError(errno.EAGAIN, f"io_submit queued {submitted} of {len(reads)} reads")
        return self._wait(len(reads))

    def _wait(self, count) -> List[int]:
        results = [0] * count
        events = (IoEvent * count)()
        done = 0
        while done < count:
            got = _libc.syscall(SYS_IO_GETEVENTS, self.ctx, count - done, count - done, events, None)
            if got < 0:
                if ctypes.get_errno() == errno.EINTR:
                    continue
                _raise("io_getevents")
            for event in events[:got]:
                results[event.data] = event.res
            done += got
        return results

    def read_fully(self, fd, address, length, chunk):
        """Reads [0, length) of fd into address, up to depth chunks in flight; short reads are read again."""
        pending = [(address + offset, min(chunk, length - offset), offset) for offset in range(0, length, chunk)]
        done = 0
        while pending:
            batch, pending = pending[:self.depth], pending[self.depth:]
            again = []
            for (where, want, offset), got in zip(batch, self.pread_batch(fd, batch)):
                if got < 0:
                    raise OSError(-got, f"AIO read at {offset}: {os.strerror(-got)}")
                done += got
                if 0 < got < want:
                    again.append((where + got, want - got, offset + got))
            pending = again + pending  # a read that got 0 bytes (end of file) is not asked again
        return done

    def close(self):
        if self.ctx.value:
            _libc.syscall(SYS_IO_DESTROY, self.ctx)
            self.ctx = ctypes.c_ulong(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def answer() -> Optional[str]:
    """None if native AIO works here, else why not (io_setup, tried)."""
    try:
        with AioContext(1):
            pass
    except OSError as error:
        return f"absent on this kernel (io_setup answers {errno.errorcode.get(error.errno, error.errno)})"
    return None
