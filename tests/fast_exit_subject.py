"""A process for the syscall path's fast-exit tests (tests/host/test_fast_exit_host.py): started before the
tracer (so that it inherits no bit from the test process, which the tracer's own attach marks), it maps
nothing and holds no shared memory until told, one command a line on stdin, one answer a line on stdout:

    python fast_exit_subject.py FILE [CURRENT_FD]

plain N         pread FILE (an ordinary file) N times into anonymous memory
memfd [keep]    create a memfd (the current fd; close-on-exec unless keep); answers "FD INODE"
open PATH       open PATH read-write as the current fd (/proc/PID/fd/N of another process); answers its inode
recv FD         receive the current fd over the unix socket at fd FD (SCM_RIGHTS); answers its inode
getfd PID FD    take fd FD of process PID with pidfd_getfd as the current fd; answers its inode
rw N            N writes (write()) of 4096 bytes to the current fd, then N preads of 4096 bytes from it
copy N          N copy_file_range calls of 4096 bytes from FILE to FILE.copy (ordinary files, one filesystem)
sendfile N      N sendfile calls of 4096 bytes from FILE to the current fd
fork N          fork; the child does "rw N" and exits; answers the child's pid
uring           set up an io_uring ring (its requests could open or receive fds unseen)
tty             open a pseudo-terminal pair and ask both ends their window size (ioctls on ttys)
exec            answer, then exec this script again (same pid, same stdin and stdout, the current fd's number)
"""
import ctypes
import fcntl
import os
import socket
import sys
import termios

NR_PIDFD_GETFD = 438  # x86-64 and arm64 alike
NR_IO_URING_SETUP = 425
libc = ctypes.CDLL(None, use_errno=True)
plain = os.open(sys.argv[1], os.O_RDONLY)
current = int(sys.argv[2]) if len(sys.argv) > 2 else -1
page = b"\xa5" * 4096


def rw(count):
    for _ in range(count):
        os.write(current, page)
    for _ in range(count):
        os.pread(current, 4096, 0)


for line in sys.stdin:
    command, *args = line.split()
    answer = "ok"
    if command == "plain":
        for _ in range(int(args[0])):
            os.pread(plain, 4096, 0)
    elif command == "memfd":
        current = os.memfd_create("fast-exit-subject")
        os.set_inheritable(current, args == ["keep"])
        answer = f"{current} {os.fstat(current).st_ino}"
    elif command == "open":
        current = os.open(args[0], os.O_RDWR)
        answer = str(os.fstat(current).st_ino)
    elif command == "recv":
        _, fds, _, _ = socket.recv_fds(socket.socket(fileno=int(args[0])), 16, 1)
        current = fds[0]
        answer = str(os.fstat(current).st_ino)
    elif command == "getfd":
        pidfd = os.pidfd_open(int(args[0]))
        current = libc.syscall(NR_PIDFD_GETFD, pidfd, int(args[1]), 0)
        assert current >= 0, ctypes.get_errno()
        os.close(pidfd)
        answer = str(os.fstat(current).st_ino)
    elif command == "uring":
        params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
        ring = libc.syscall(NR_IO_URING_SETUP, 4, params)
        answer = "ok" if ring >= 0 else f"errno {ctypes.get_errno()}"
    elif command == "tty":
        master, slave = os.openpty()
        for end in (master, slave):
            fcntl.ioctl(end, termios.TIOCGWINSZ, b"\0" * 8)
    elif command == "rw":
        rw(int(args[0]))
    elif command == "copy":
        copy = os.open(sys.argv[1] + ".copy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for _ in range(int(args[0])):
            assert os.copy_file_range(plain, copy, 4096, 0, 0) == 4096
        os.close(copy)
    elif command == "sendfile":
        for _ in range(int(args[0])):
            assert os.sendfile(current, plain, 0, 4096) == 4096
    elif command == "fork":
        child = os.fork()
        if child == 0:
            rw(int(args[0]))
            os._exit(0)
        os.waitpid(child, 0)
        answer = str(child)
    print(answer, flush=True)
    if command == "exec":
        os.execv(sys.executable, [sys.executable, __file__, sys.argv[1], str(current)])
