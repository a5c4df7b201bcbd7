"""A model loader's shape, for `dmabuf-top record` tests in the guest (run as a command, not collected).

    python3 load_model.py MODEL PID_FILE HOLD_S EXIT_CODE

Allocates a 4 MiB heap buffer "weights-heap" and an 8 MiB udmabuf "weights-udmabuf",
reads MODEL's first 2 MiB with a buffered read() into the heap buffer's mapping (a CPU
copy out of the page cache) and MODEL's next 2 MiB with an O_DIRECT read() into the
udmabuf's memfd mapping (pinned pages, no CPU copy), writes its pid, holds the buffers
HOLD_S seconds, frees them and exits with EXIT_CODE. Each read is one syscall, checked.
"""
import os
import sys
import time

from dmabuf_top.alloc import alloc_heap, alloc_udmabuf

CHUNK = 2 << 20


def main(model, pid_file, hold_s, exit_code):
    weights = alloc_heap(4 << 20, name="weights-heap")
    staging = alloc_udmabuf(8 << 20, name="weights-udmabuf")
    heap_view = weights.mmap()
    memfd_view = staging.mmap_memfd()

    buffered = os.open(model, os.O_RDONLY)
    got = os.readv(buffered, [memoryview(heap_view)[:CHUNK]])
    assert got == CHUNK, got
    os.close(buffered)

    direct = os.open(model, os.O_RDONLY | os.O_DIRECT)
    os.lseek(direct, CHUNK, os.SEEK_SET)  # (Python's os.preadv may issue preadv2, which the tracer does not hook)
    got = os.readv(direct, [memoryview(memfd_view)[:CHUNK]])
    assert got == CHUNK, got
    os.close(direct)

    with open(pid_file + ".tmp", "w") as file:
        file.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    time.sleep(hold_s)
    memfd_view.close()
    heap_view.close()
    staging.close()
    weights.close()
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
