"""A user's loader through io_uring, for `validate -- CMD` tests: IORING_OP_READ from FILE into a buffer's mapping.

    python tests/uring_load.py BUFFER FILE [direct]

BUFFER is a validate buffer kind (udmabuf: the reads land in the memfd mapping under the udmabufs; memfd).
With `direct` the file is opened O_DIRECT (the device DMAs into the buffer's pages), else buffered (the
page cache, then a copy in the kernel). The I/O tracer sees no read syscall here, only io_uring_enter.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from uring_read import Ring  # noqa: E402  (tests/ is no package: the path is set just above)

from dmabuf_top.validate import methods  # noqa: E402


def main(argv):
    kind, path = argv[0], argv[1]
    direct = len(argv) > 2 and argv[2] == "direct"
    size = os.stat(path).st_size
    buffer = methods.BUFFERS[kind](size)
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
        try:
            with Ring() as ring:
                moved = ring.read_fully(fd, buffer.address, size)
        finally:
            os.close(fd)
    finally:
        buffer.close()
    print(f"io_uring {kind} {'direct' if direct else 'buffered'}: moved {moved} of {size} bytes")
    return 0 if moved == size else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
