"""Load a file into a buffer by one method of the matrix, as a standalone program:

    python -m dmabuf_top.validate.load METHOD FILE

A ready-made "user command" for `dmabuf-top validate -- CMD --expect ...`: it does only
the method's allocation and I/O, then prints the bytes moved. Exit 1 with the kernel's
error when the method fails.
"""
import os
import sys

from . import methods


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in methods.BY_NAME:
        print(f"usage: python -m dmabuf_top.validate.load METHOD FILE; METHOD one of: {', '.join(methods.BY_NAME)}",
              file=sys.stderr)
        return 2
    method, path = methods.BY_NAME[argv[0]], argv[1]
    size = os.stat(path).st_size
    buffer = methods.BUFFERS[method.buffer](size)
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if method.direct else 0))
        try:
            moved = method.load(buffer, fd, size, 32 << 20)
        finally:
            os.close(fd)
    except OSError as error:
        print(f"{method.name}: {error}", file=sys.stderr)
        return 1
    finally:
        buffer.close()
    print(f"{method.name}: moved {moved} of {size} bytes")
    return 0 if moved == size else 1


if __name__ == "__main__":
    sys.exit(main())
