"""io_uring (and, where fentry works, AIO) requests on this kernel: attributed to the issuing process and to the
memory object at the buffer address, with the bytes of each completion (tp_btf io_uring tracepoints: the CI
host has them, and no fentry). A memfd mapping stands in for a udmabuf's memory (no heaps needed)."""
import contextlib
import ctypes
import dataclasses
import json
import mmap
import os
import subprocess
import sys

import pytest
from aio_read import AioContext  # tests/ is on sys.path (its conftest, rootdir-relative; no packages)
from uring_read import IORING_OP_READ, IORING_OP_READ_FIXED, IORING_OP_READV, IORING_SETUP_SQPOLL, Ring

from dmabuf_top import features
from dmabuf_top.probes.tracer import Tracer

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 4 << 20
CHUNK = 1 << 20
ASYNC_LOAD = os.path.join(ROOT, "tests", "async_load.py")


@pytest.fixture(scope="module")
def report():
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as control:
            if control.read().strip() == "2":
                pytest.skip("io_uring is disabled here (kernel.io_uring_disabled = 2)")
    except FileNotFoundError:
        pass
    return features.detect()


@pytest.fixture(scope="module")
def data_file():
    build = os.path.join(ROOT, "build")
    os.makedirs(build, exist_ok=True)
    path = os.path.join(build, f"async-host-{os.getpid()}.bin")
    with open(path, "wb") as out:
        out.write(os.urandom(SIZE))
    yield path
    os.unlink(path)


@contextlib.contextmanager
def reader(data_file, anonymous_size=0):
    """The data file open for reading, a SIZE memfd mapped shared and, when asked, private anonymous memory beside
    it: (fd, the memfd's inode, its mapping, the anonymous mapping or None); all closed after."""
    memfd = os.memfd_create("async-host")
    os.ftruncate(memfd, SIZE)
    with contextlib.ExitStack() as resources:
        resources.callback(os.close, memfd)
        mapping = resources.enter_context(mmap.mmap(memfd, SIZE))
        anonymous = None
        if anonymous_size:
            private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
            anonymous = resources.enter_context(mmap.mmap(-1, anonymous_size, flags=private))
        fd = os.open(data_file, os.O_RDONLY)
        resources.callback(os.close, fd)
        yield fd, os.fstat(memfd).st_ino, mapping, anonymous


def address_of(mapping):
    return ctypes.addressof(ctypes.c_char.from_buffer(mapping))


def read_all(api, fd, address, size):
    if api == "aio":
        with AioContext() as aio:
            return aio.read_fully(fd, address, size, CHUNK)
    opcode = {"uring": IORING_OP_READ, "readv": IORING_OP_READV, "fixed": IORING_OP_READ_FIXED,
              "sqpoll": IORING_OP_READ}[api]
    with Ring(flags=IORING_SETUP_SQPOLL if api == "sqpoll" else 0) as ring:
        if api == "fixed":
            ring.register_buffer(address, size)
        return ring.read_fully(fd, address, size, CHUNK, opcode)


def test_io_uring_hooks_are_live_and_aio_is_live_or_missing_never_absent(report):
    with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
        states = {hook.program: hook for hook in tracer.hooks}
    assert states["uring_submit_btf"].live and states["uring_complete_btf"].live
    assert states["uring_submit_raw"].state.value == "not needed"
    if not report.available("fentry"):  # AIO through its syscalls instead
        assert states["aio_submit_sys"].live and states["aio_events_sys"].live
        assert not states["aio_read_enter"].missing and not states["aio_complete"].missing


@pytest.mark.parametrize("api", ["uring", "readv", "fixed", "sqpoll"])
def test_io_uring_reads_into_a_memfd_mapping_are_attributed_to_the_memfd_and_the_process(report, data_file, api):
    with reader(data_file) as (fd, inode, mapping, _):
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            assert read_all(api, fd, address_of(mapping), SIZE) == SIZE
            snap = tracer.snapshot()
        with open(data_file, "rb") as source:
            assert mapping[:] == source.read()
    (target, counters), = [(t, c) for t, c in snap.by_target.items() if t.inode == inode]
    assert (target.path, target.kind, target.direct) == ("io_uring", "shmem", False)
    assert (counters.calls, counters.errors, counters.bytes, counters.requested) == (4, 0, SIZE, SIZE)
    assert sum(counters.latency_hist) == 4 and counters.latency_ns > 0
    assert snap.by_task[(os.getpid(), "io_uring")].bytes == SIZE
    outcomes = {(o.src_kind, o.dst_kind): v for o, v in snap.outcomes.items() if o.path == "io_uring"}
    assert outcomes == {("file", "shmem"): {"calls": 4, "bytes": SIZE, "requested": SIZE}}


def test_io_uring_reads_into_anonymous_memory_are_not_the_memfds(report, data_file):
    """The fooling case: one process, a memfd mapping and private anonymous memory, reads into both."""
    with reader(data_file, 2 * SIZE) as (fd, inode, mapping, anonymous):
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            assert read_all("uring", fd, address_of(anonymous), SIZE) == SIZE
            assert read_all("uring", fd, address_of(mapping), CHUNK) == CHUNK
            assert read_all("uring", fd, address_of(anonymous) + SIZE, SIZE) == SIZE
            snap = tracer.snapshot()
    uring = {t: c for t, c in snap.by_target.items() if t.path == "io_uring"}
    assert {(t.inode, t.kind): c.bytes for t, c in uring.items()} == {(inode, "shmem"): CHUNK, (0, "none"): 2 * SIZE}


def test_aio_reads_into_a_memfd_mapping_are_attributed_by_fentry_or_the_syscall_fallback(report, data_file):
    """Without fentry (the CI host) io_submit's iocbs and io_getevents' events carry the attribution."""
    with reader(data_file, SIZE) as (fd, inode, mapping, anonymous):
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            states = {hook.program: hook for hook in tracer.hooks if hook.concern == "aio"}
            assert read_all("aio", fd, address_of(anonymous), SIZE) == SIZE
            assert read_all("aio", fd, address_of(mapping), SIZE) == SIZE
            snap = tracer.snapshot()
    assert "aio" not in snap.missing_concerns()
    live = {name for name, hook in states.items() if hook.live}
    if not report.available("fentry"):
        assert live == {"aio_submit_sys", "aio_events_sys"}
        assert states["aio_complete"].state.value == "not needed" and "aio_events_sys is used" in states[
            "aio_complete"].why
    moved = {(t.inode, t.kind, t.direct): (c.calls, c.errors, c.bytes, c.requested)
             for t, c in snap.by_target.items() if t.path == "aio"}
    assert moved == {(inode, "shmem", False): (4, 0, SIZE, SIZE), (0, "none", False): (4, 0, SIZE, SIZE)}
    assert snap.by_task[(os.getpid(), "aio")].bytes == 2 * SIZE
    outcomes = {(o.src_kind, o.dst_kind, o.error): v["calls"] for o, v in snap.outcomes.items() if o.path == "aio"}
    assert outcomes == {("file", "shmem", 0): 4, ("file", "none", 0): 4}


def test_the_trace_command_shows_a_commands_io_uring_bytes_in_its_memfd(report, data_file, tmp_path):
    info_path = tmp_path / "info.json"
    done = subprocess.run([sys.executable, "-m", "dmabuf_top", "trace", "--json", "--", sys.executable, ASYNC_LOAD,
                           "sqpoll", "memfd", data_file, str(info_path), "decoy"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out, info = json.loads(done.stdout.splitlines()[-1]), json.loads(info_path.read_text())
    uring = [t for t in out["targets"] if t["path"] == "io_uring" and t["inode"] == info["memory_inode"]]
    assert [(t["kind"], t["bytes"], t["calls"]) for t in uring] == [("shmem", SIZE, 4)]
    process = [p for p in out["processes"] if p["tgid"] == info["pid"] and p["path"] == "io_uring"]
    assert [p["bytes"] for p in process] == [2 * SIZE]  # the decoy's reads too, into memory of kind none
    assert out["paths"]["io_uring"]["bytes"] >= 2 * SIZE


def test_the_raw_tp_fallback_attributes_what_tp_btf_attributes(report, data_file):
    if not report.available("raw_tracepoint"):
        pytest.skip("this kernel has no raw tracepoints either")
    without_tp_btf = dataclasses.replace(report, features=dict(
        report.features, tp_btf=features.Feature(False, None, "refused (test)")))
    with reader(data_file) as (fd, inode, mapping, _):
        with Tracer(pid=os.getpid(), ignore_self=False, report=without_tp_btf) as tracer:
            hooks = {hook.program: hook for hook in tracer.hooks}
            assert read_all("readv", fd, address_of(mapping), SIZE) == SIZE
            snap = tracer.snapshot()
    assert hooks["uring_submit_raw"].via == "raw_tp" and hooks["uring_complete_raw"].via == "raw_tp"
    (target, counters), = [(t, c) for t, c in snap.by_target.items() if t.inode == inode]
    assert (target.path, counters.calls, counters.bytes) == ("io_uring", 4, SIZE)
    assert "io_uring" not in snap.missing_concerns()  # traced by the fallback: not n/t
