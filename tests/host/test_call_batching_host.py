"""A thread's run of same-keyed calls is summed in its task storage and reaches the maps whole.

iopaths.bpf.c (struct call_batch) adds a run to io_by_target and io_by_task when a call has other
keys or fails, when the run is 20 ms old, when the thread is switched out, and when the thread
itself calls bpf(). Each test below fails if one of those flushes is missing: the counts would
stay short of what the workload did.
"""
import ctypes
import mmap
import os
import subprocess
import sys
import textwrap
import time

import pytest

from dmabuf_top import features
from dmabuf_top.probes.tracer import Tracer

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHUNK = 4096
libc = ctypes.CDLL(None, use_errno=True)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)


@pytest.fixture(scope="module")
def report():
    return features.detect()


@pytest.fixture
def source():
    path = os.path.join(ROOT, "build", f"batching-{os.getpid()}.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(os.urandom(64 * CHUNK))
    yield path
    os.unlink(path)


def reads_of(snap, tgid):
    """The process's read-path calls ({(tgid, path): Counters} in by_task), or None before any."""
    return snap.by_task.get((tgid, "read"))


def test_a_thread_that_goes_to_sleep_after_its_reads_has_them_all_in_the_maps(report, source):
    # The child makes no other call after its reads that could flush them (it tells the parent it is
    # done through shared memory, then sleeps): only the switch-out at its sleep puts them in the maps.
    # It reads into a memfd mapping of its own, so its start-up reads are not in the count.
    shared_fd = os.memfd_create("batching-flag")
    os.ftruncate(shared_fd, mmap.PAGESIZE)
    shared = mmap.mmap(shared_fd, mmap.PAGESIZE)
    code = textwrap.dedent(f"""\
        import ctypes, mmap, os, struct, time
        libc = ctypes.CDLL(None)
        libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)
        shared = mmap.mmap({shared_fd}, mmap.PAGESIZE)
        fd = os.open({source!r}, os.O_RDONLY)
        target = os.memfd_create("batching-target")
        os.ftruncate(target, {CHUNK})
        mapping = mmap.mmap(target, {CHUNK})
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
        inode = os.fstat(target).st_ino
        for i in range(500):
            libc.pread(fd, address, {CHUNK}, (i % 64) * {CHUNK})
        shared[8:16] = struct.pack("<Q", inode)
        shared[0] = 1
        time.sleep(30)
        """)
    try:
        with Tracer(report=report) as tracer:
            child = subprocess.Popen([sys.executable, "-c", code], pass_fds=(shared_fd,))
            try:
                deadline = time.monotonic() + 30
                while shared[0] != 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert shared[0] == 1, "the child did not finish its reads"
                while _state(child.pid) != "S" and time.monotonic() < deadline:
                    time.sleep(0.01)
                snap = tracer.snapshot()
            finally:
                child.kill()
                child.wait()
        inode = int.from_bytes(shared[8:16], "little")
    finally:
        shared.close()
        os.close(shared_fd)
    (reads,) = [c for t, c in snap.by_target.items() if t.inode == inode and t.path == "read"]
    assert (reads.calls, reads.bytes, reads.requested) == (500, 500 * CHUNK, 500 * CHUNK)
    assert sum(reads.latency_hist) == 500


def _state(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_a_thread_that_never_stops_reading_is_seen_while_it_reads(report, source):
    # It maps a memfd first: reads of a process that maps no shared memory open no record (iopaths.bpf.c).
    code = textwrap.dedent(f"""\
        import mmap, os, time
        memfd = os.memfd_create("batching-reader")
        os.ftruncate(memfd, mmap.PAGESIZE)
        shared = mmap.mmap(memfd, mmap.PAGESIZE)
        fd = os.open({source!r}, os.O_RDONLY)
        end = time.monotonic() + 20
        i = 0
        while time.monotonic() < end:
            os.pread(fd, {CHUNK}, (i % 64) * {CHUNK})
            i += 1
        """)
    with Tracer(report=report) as tracer:
        child = subprocess.Popen([sys.executable, "-c", code])
        try:
            time.sleep(0.5)
            first = reads_of(tracer.snapshot(), child.pid)
            time.sleep(0.3)
            second = reads_of(tracer.snapshot(), child.pid)
        finally:
            child.kill()
            child.wait()
    assert first is not None and second is not None and second.calls > first.calls > 0


def test_runs_that_alternate_between_two_buffers_are_each_counted_exactly(report, source):
    memfds = [os.memfd_create(f"batch-{n}") for n in range(2)]
    mappings = []
    for memfd in memfds:
        os.ftruncate(memfd, CHUNK)
        mappings.append(mmap.mmap(memfd, CHUNK))
    addresses = [ctypes.addressof(ctypes.c_char.from_buffer(m)) for m in mappings]
    fd = os.open(source, os.O_RDONLY)
    directory = os.open(os.path.dirname(source), os.O_RDONLY)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            for i in range(300):
                which = (i // 7) % 2  # runs of 7 calls, then the other buffer
                assert libc.pread(fd, addresses[which], CHUNK, (i % 64) * CHUNK) == CHUNK
                if i == 150:
                    assert libc.pread(directory, addresses[which], CHUNK, 0) == -1  # EISDIR, in a run
            snap = tracer.snapshot()
        inodes = [os.fstat(memfd).st_ino for memfd in memfds]
    finally:
        os.close(fd)
        os.close(directory)
        for mapping in mappings:
            mapping.close()
        for memfd in memfds:
            os.close(memfd)
    expected_calls = [sum(1 for i in range(300) if (i // 7) % 2 == n) for n in range(2)]
    which_failed = (150 // 7) % 2
    for n, inode in enumerate(inodes):
        (read,) = [c for t, c in snap.by_target.items() if t.inode == inode and t.path == "read"]
        failed = 1 if n == which_failed else 0
        assert (read.calls, read.errors, read.bytes) == (expected_calls[n] + failed, failed, expected_calls[n] * CHUNK)
        assert sum(read.latency_hist) == read.calls
    errors = [o for o in snap.outcomes if o.path == "read" and o.error != 0 and o.dst_kind == "shmem"]
    assert [o.error for o in errors] == [-21]  # EISDIR
