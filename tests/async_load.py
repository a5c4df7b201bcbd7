"""A loader through io_uring or AIO, for `trace`/`record -- CMD` tests: FILE read into a buffer's mapping.

    python tests/async_load.py API BUFFER FILE INFO [direct] [decoy]

API: uring (IORING_OP_READ), readv (IORING_OP_READV), fixed (READ_FIXED over the mapping, registered),
sqpoll (IORING_OP_READ on a SQPOLL ring) or aio (IOCB_CMD_PREAD). BUFFER: a validate buffer kind (heap,
udmabuf: reads go into the memfd under the udmabufs, memfd). With `direct` the file is opened O_DIRECT.
With `decoy` the file is first read the same way into private anonymous memory of the same process,
which must not be attributed to the buffer. INFO gets one JSON object: the pid, the buffer's inodes and
each request's result (bytes or -errno). Exit 0 when every request moved its bytes, 3 otherwise.
"""
import ctypes
import json
import mmap
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aio_read import AioContext  # noqa: E402  (tests/ is no package: the path is set just above)
from uring_read import (  # noqa: E402
    IORING_OP_READ,
    IORING_OP_READ_FIXED,
    IORING_OP_READV,
    IORING_SETUP_SQPOLL,
    Ring,
)

from dmabuf_top.validate import methods  # noqa: E402

CHUNK = 1 << 20
OPCODES = {"uring": IORING_OP_READ, "readv": IORING_OP_READV, "fixed": IORING_OP_READ_FIXED,
           "sqpoll": IORING_OP_READ}


def requests(api, fd, address, size):
    """[result of each chunk's request]: bytes, or -errno (a failed chunk is not retried)."""
    results = []
    if api == "aio":
        with AioContext() as aio:
            for offset in range(0, size, CHUNK):
                results.append(aio.request(fd, address + offset, min(CHUNK, size - offset), offset))
        return results
    with Ring(flags=IORING_SETUP_SQPOLL if api == "sqpoll" else 0) as ring:
        if api == "fixed":
            ring.register_buffer(address, size)
        for offset in range(0, size, CHUNK):
            results.append(ring.read(fd, address + offset, min(CHUNK, size - offset), offset, OPCODES[api]))
    return results


def main(argv):
    api, kind, path, info = argv[:4]
    direct, decoy = "direct" in argv[4:], "decoy" in argv[4:]
    size = os.stat(path).st_size
    buffer = methods.BUFFERS[kind](size)
    anonymous = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) if decoy else None
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
        try:
            decoy_results = []
            if anonymous is not None:
                decoy_results = requests(api, fd, ctypes.addressof(ctypes.c_char.from_buffer(anonymous)), size)
            results = requests(api, fd, buffer.address, size)
        finally:
            os.close(fd)
        out = {"pid": os.getpid(), "inode": buffer.inode, "memory_inode": os.fstat(buffer.fd).st_ino,
               "size": size, "results": results, "decoy_results": decoy_results}
    finally:
        buffer.close()
        if anonymous is not None:
            anonymous.close()
    with open(info, "w") as handle:
        json.dump(out, handle)
    return 0 if sum(r for r in results if r > 0) == size and min(results) > 0 else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
