"""A reader for the shared-memory bit's tests (tests/host/test_tracing_host.py on the syscall path,
tests/vm/test_tracing.py on the VFS path): reads FILE BEFORE times into anonymous memory, then gets shared
memory by MODE and reads AFTER times more. Prints its own pid and the pid whose reads follow.

    python shared_memory_reader.py FILE BEFORE AFTER MODE

MODE: map (maps a memfd), fork (maps a memfd, then forks, and the child reads), shmat (maps System V shared
memory), memfd-fd (maps nothing: reads the memfd by its fd).
"""
import ctypes
import mmap
import os
import sys

path, before, after, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(path, os.O_RDONLY)
for _ in range(before):
    os.pread(fd, 4096, 0)
memfd = os.memfd_create("shared-memory-reader")
os.ftruncate(memfd, 4096)
if mode == "shmat":
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shmid = libc.shmget(0, 4096, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
    assert shmid >= 0 and libc.shmat(shmid, None, 0) not in (None, ctypes.c_void_p(-1).value)
    libc.shmctl(shmid, 0, None)  # IPC_RMID: gone once detached
elif mode != "memfd-fd":
    shared = mmap.mmap(memfd, 4096)
reader = os.getpid()
source = memfd if mode == "memfd-fd" else fd
if mode == "fork":
    reader = os.fork()
    if reader == 0:
        for _ in range(after):
            os.pread(fd, 4096, 0)
        os._exit(0)
    os.waitpid(reader, 0)
else:
    for _ in range(after):
        os.pread(source, 4096, 0)
print(os.getpid(), reader, flush=True)
