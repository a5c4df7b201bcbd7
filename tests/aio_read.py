"""Linux AIO reads through the raw syscalls (ctypes), for tests: no libaio on these machines.

io_setup/io_submit/io_getevents/io_destroy with one IOCB_CMD_PREAD (or PWRITE) in flight at a time.
Layouts from include/uapi/linux/aio_abi.h (x86-64 syscall numbers). With an O_DIRECT file the
request is queued and completes from the bio's end (interrupt context); buffered, it completes
inside io_submit.
"""
import ctypes
import struct

SYS_IO_SETUP = 206
SYS_IO_DESTROY = 207
SYS_IO_GETEVENTS = 208
SYS_IO_SUBMIT = 209
IOCB_CMD_PREAD = 0
IOCB_CMD_PWRITE = 1
# data, key, rw_flags, opcode, reqprio, fildes, buf, nbytes, offset, reserved2, flags, resfd
IOCB = struct.Struct("<QIIHhIQQqQII")
EVENT = struct.Struct("<QQqq")  # data, obj, res, res2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

assert IOCB.size == 64


class AioContext:
    def __init__(self, depth=4):
        self._ctx = ctypes.c_ulong(0)
        if _libc.syscall(SYS_IO_SETUP, depth, ctypes.byref(self._ctx)) < 0:
            raise OSError(ctypes.get_errno(), "io_setup")

    def request(self, fd, address, length, offset, opcode=IOCB_CMD_PREAD):
        """One request, submitted and waited for: the event's result (bytes, or -errno)."""
        iocb = ctypes.create_string_buffer(IOCB.pack(0xA10, 0, 0, opcode, 0, fd, address, length, offset, 0, 0, 0))
        iocbs = (ctypes.c_void_p * 1)(ctypes.addressof(iocb))
        submitted = _libc.syscall(SYS_IO_SUBMIT, self._ctx, 1, iocbs)
        if submitted != 1:
            raise OSError(ctypes.get_errno(), "io_submit")
        event = ctypes.create_string_buffer(EVENT.size)
        got = _libc.syscall(SYS_IO_GETEVENTS, self._ctx, 1, 1, event, None)
        if got != 1:
            raise OSError(ctypes.get_errno(), "io_getevents")
        data, _obj, res, _res2 = EVENT.unpack(event.raw)
        assert data == 0xA10
        return res

    def read_fully(self, fd, address, length, chunk=4 << 20):
        done = 0
        while done < length:
            got = self.request(fd, address + done, min(chunk, length - done), done)
            if got <= 0:
                raise OSError(-got if got < 0 else 0, f"AIO read at {done} returned {got}")
            done += got
        return done

    def close(self):
        if self._ctx.value:
            _libc.syscall(SYS_IO_DESTROY, self._ctx)
            self._ctx = ctypes.c_ulong(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
