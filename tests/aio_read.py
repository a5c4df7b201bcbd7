"""Linux AIO reads through the raw syscalls (ctypes), for tests: no libaio on these machines.

The context, the uAPI's numbers and layouts are the library's (dmabuf_top/validate/aio.py: read_fully keeps up to
its depth of reads in flight); `request` adds one IOCB_CMD_PREAD submitted and waited for on its own, so a test
sees each request's result. With an O_DIRECT file the request is queued and completes from the bio's end
(interrupt context); buffered, it completes inside io_submit.
"""
from dmabuf_top.validate import aio


class AioContext(aio.AioContext):
    def request(self, fd, address, length, offset):
        """One read, submitted and waited for: its result (bytes, or -errno)."""
        return self.pread_batch(fd, [(address, length, offset)])[0]
