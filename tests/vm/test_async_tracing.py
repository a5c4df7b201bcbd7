"""io_uring and AIO requests in the lab guest: real dma-bufs, a real NVMe ext4 file, exact numbers.

Each request is attributed at issue to the issuing process and the memory at its buffer address, and
credited at completion: buffered and O_DIRECT io_uring reads into a udmabuf's memfd and a system-heap
mapping, SQPOLL (the ring's own kernel thread issues), AIO O_DIRECT (completed from the bio's end, in
interrupt context), and reads into anonymous memory beside a dma-buf that must not be the dma-buf's.
"""
import collections
import dataclasses
import errno
import hashlib
import io
import json
import mmap
import os
import subprocess
import sys

import pytest
from aio_read import AioContext  # tests/ is on sys.path (its conftest, rootdir-relative; no packages)
from guest_files import address_of, random_file
from uring_read import IORING_OP_READ, IORING_OP_READ_FIXED, IORING_SETUP_SQPOLL, Ring

from dmabuf_top import features
from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
from dmabuf_top.analysis import tables
from dmabuf_top.analysis.html import HtmlRenderer
from dmabuf_top.inventory.index import BufferIndex
from dmabuf_top.probes.dmabuf_iter import read_buffers
from dmabuf_top.probes.tracer import Tracer
from dmabuf_top.recording.session import Session

pytestmark = pytest.mark.guest

SIZE = 8 << 20
CHUNK = 1 << 20
CALLS = SIZE // CHUNK
ASYNC_LOAD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "async_load.py")


@pytest.fixture(scope="module")
def data_file():
    with random_file("async-8m.bin", SIZE) as made:
        yield made


def requests(api, fd, address, size=SIZE):
    """Each chunk's result (bytes or -errno), one request in flight at a time."""
    if api == "aio":
        with AioContext() as aio:
            return [aio.request(fd, address + at, CHUNK, at) for at in range(0, size, CHUNK)]
    with Ring(flags=IORING_SETUP_SQPOLL if api == "sqpoll" else 0) as ring:
        opcode = IORING_OP_READ
        if api == "fixed":
            ring.register_buffer(address, size)
            opcode = IORING_OP_READ_FIXED
        return [ring.read(fd, address + at, CHUNK, at, opcode) for at in range(0, size, CHUNK)]


def path_of(api):
    """The tracer's path for requests made through `api`."""
    return "aio" if api == "aio" else "io_uring"


Load = collections.namedtuple("Load", "results snap per_buffer live")


def traced_load(report, data_file, direct, mapping, api):
    """Read the file into `mapping` (closed after) through `api` under a Tracer of this process: each request's
    result, the snapshot, per-buffer counters by inode and the live hooks of the path. When every request moved
    its chunk the mapping must hold the file."""
    path, digest = data_file
    with mapping:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
        try:
            with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
                live = {hook.program for hook in tracer.hooks if hook.concern == path_of(api) and hook.live}
                results = requests(api, fd, address_of(mapping))
                snap = tracer.snapshot()
            inventory = read_buffers()
        finally:
            os.close(fd)
        if results == [CHUNK] * CALLS:
            assert hashlib.sha256(mapping[:]).hexdigest() == digest
    index = BufferIndex()
    index.learn(inventory)
    return Load(results, snap, index.per_buffer(snap.by_target), live)


def test_the_guest_traces_io_uring_and_aio(report):
    with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
        states = {hook.program: hook for hook in tracer.hooks}
    assert states["uring_submit_btf"].live and states["uring_complete_btf"].live
    assert all(states[name].live for name in ("aio_read_enter", "aio_read_exit", "aio_complete")), [
        (h.program, h.why) for h in states.values() if h.concern == "aio"]


@pytest.mark.parametrize("api,direct", [("uring", False), ("uring", True), ("sqpoll", True), ("fixed", True),
                                        ("aio", True), ("aio", False)])
def test_reads_into_a_udmabuf_memfd_are_the_udmabufs(report, data_file, udmabuf_available, api, direct):
    with alloc_udmabuf(SIZE, name="async-udmabuf") as buf:
        results, snap, per_buffer, _ = traced_load(report, data_file, direct, buf.mmap_memfd(), api)
    assert results == [CHUNK] * CALLS
    label = path_of(api)
    counters = per_buffer[buf.inode][label]
    assert (counters.calls, counters.errors, counters.bytes, counters.requested) == (CALLS, 0, SIZE, SIZE)
    target, = [t for t in snap.by_target if t.path == label and t.kind == "shmem"]
    assert target.direct is direct
    assert snap.by_task[(os.getpid(), label)].bytes == SIZE


@pytest.mark.parametrize("api", ["uring", "sqpoll", "aio"])
def test_buffered_reads_into_a_heap_mapping_are_the_heap_buffers(report, data_file, heap_available, api):
    with alloc_heap(SIZE, name="async-heap") as buf:
        results, snap, per_buffer, _ = traced_load(report, data_file, False, buf.mmap(), api)
    assert results == [CHUNK] * CALLS
    label = path_of(api)
    counters = per_buffer[buf.inode][label]
    assert (counters.calls, counters.bytes) == (CALLS, SIZE)
    target, = [t for t in snap.by_target if t.inode == buf.inode]
    assert (target.kind, target.path, target.direct) == ("dmabuf", label, False)


@pytest.mark.parametrize("api", ["uring", "aio"])
def test_direct_reads_into_a_heap_mapping_fail_and_are_counted_as_the_buffers_errors(report, data_file,
                                                                                     heap_available, api):
    """The heap maps its pages VM_PFNMAP: O_DIRECT cannot pin them, each request ends -EFAULT."""
    with alloc_heap(SIZE, name="async-heap-direct") as buf:
        results, snap, per_buffer, _ = traced_load(report, data_file, True, buf.mmap(), api)
    assert results == [-errno.EFAULT] * CALLS
    label = path_of(api)
    counters = per_buffer[buf.inode][label]
    assert (counters.calls, counters.errors, counters.bytes) == (CALLS, CALLS, 0)
    outcome = {(o.error, o.dst_kind, o.src_fs): v["calls"] for o, v in snap.outcomes.items() if o.path == label}
    assert outcome == {(-errno.EFAULT, "dmabuf", "ext4"): CALLS}


@pytest.mark.parametrize("api", ["uring", "aio"])
def test_reads_into_anonymous_memory_beside_a_dmabuf_are_not_the_dmabufs(report, data_file, heap_available, api):
    """The fooling case: the process holds a mapped dma-buf and reads (the same way) into private anonymous
    memory; only what goes into the dma-buf's mapping is the dma-buf's."""
    path, _ = data_file
    anonymous = mmap.mmap(-1, SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with alloc_heap(SIZE, name="async-decoy") as buf:
        mapping = buf.mmap()
        fd = os.open(path, os.O_RDONLY)
        try:
            with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
                assert requests(api, fd, address_of(anonymous)) == [CHUNK] * CALLS
                assert requests(api, fd, address_of(mapping), CHUNK) == [CHUNK]
                snap = tracer.snapshot()
        finally:
            os.close(fd)
            mapping.close()
            anonymous.close()
    label = path_of(api)
    moved = {(t.inode, t.kind): c.bytes for t, c in snap.by_target.items() if t.path == label}
    assert moved == {(buf.inode, "dmabuf"): CHUNK, (0, "none"): SIZE}


def test_the_trace_command_shows_sqpoll_reads_into_a_heap_buffer_for_the_loader(data_file, heap_available, tmp_path):
    path, _ = data_file
    info_path = tmp_path / "info.json"
    done = subprocess.run([sys.executable, "-m", "dmabuf_top", "trace", "--json", "--", sys.executable, ASYNC_LOAD,
                           "sqpoll", "heap", path, str(info_path), "decoy"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    out, info = json.loads(done.stdout.splitlines()[-1]), json.loads(info_path.read_text())
    into_buffer = [t for t in out["targets"] if t["path"] == "io_uring" and t["inode"] == info["inode"]]
    assert [(t["kind"], t["bytes"], t["calls"]) for t in into_buffer] == [("dmabuf", SIZE, CALLS)]
    loader = [p for p in out["processes"] if p["tgid"] == info["pid"] and p["path"] == "io_uring"]
    assert [(p["bytes"], p["calls"]) for p in loader] == [(2 * SIZE, 2 * CALLS)]  # the decoy's too
    assert "io_uring" not in out["missing"] and "aio" not in out["missing"]


def test_record_keeps_aio_direct_reads_into_a_udmabuf_and_the_report_lists_them(data_file, udmabuf_available,
                                                                                  tmp_path):
    path, _ = data_file
    session_path, info_path = tmp_path / "aio.session", tmp_path / "info.json"
    run = subprocess.run([sys.executable, "-m", "dmabuf_top", "record", "-o", str(session_path), "--interval", "0.2",
                          "--", sys.executable, ASYNC_LOAD, "aio", "udmabuf", path, str(info_path), "direct"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    info = json.loads(info_path.read_text())
    with Session(session_path) as session:
        per_buffer = session.query("SELECT inode, path, sum(bytes), sum(calls) FROM path_samples "
                                   "WHERE path LIKE 'aio%' GROUP BY 1, 2")
        assert per_buffer == [(info["inode"], "aio_direct", SIZE, CALLS)]
        events = session.query("SELECT tgid, inode, sum(bytes), count(*) FROM io_events WHERE path = 'aio_direct' "
                               "GROUP BY 1, 2")
        assert events == [(info["pid"], info["inode"], SIZE, CALLS)]
        totals = {t.path: t for t in tables.path_totals(session)}
        assert (totals["aio_direct"].calls, totals["aio_direct"].bytes) == (CALLS, SIZE)
        page = io.StringIO()
        HtmlRenderer().render(session, page)
    assert "<td>aio_direct</td>" in page.getvalue()


def test_the_aio_syscall_fallback_attributes_what_fentry_attributes(report, data_file, udmabuf_available):
    """A kernel that refuses fentry on the AIO path gets io_submit/io_getevents read at the syscall tracepoints."""
    refused = features.Feature(False, None, "fentry refused (test)")
    without_fentry = dataclasses.replace(report, features={
        **report.features, **{f"fn/{name}": refused for name in ("aio_read", "aio_write", "aio_complete_rw")}})
    with alloc_udmabuf(SIZE, name="async-udmabuf-sys") as buf:
        results, snap, per_buffer, live = traced_load(without_fentry, data_file, True, buf.mmap_memfd(), "aio")
    assert live == {"aio_submit_sys", "aio_events_sys"} and "aio" not in snap.missing_concerns()
    assert results == [CHUNK] * CALLS
    counters = per_buffer[buf.inode]["aio"]
    assert (counters.calls, counters.errors, counters.bytes) == (CALLS, 0, SIZE)
    target, = [t for t in snap.by_target if t.path == "aio" and t.kind == "shmem"]
    assert target.direct is True
