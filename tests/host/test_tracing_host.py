"""I/O path tracing on this kernel: the tracepoint-only subset, with real files on a real filesystem."""
import ctypes
import dataclasses
import mmap
import os
import subprocess
import sys
import threading

import pytest

from dmabuf_top import features, kernelfs
from dmabuf_top.probes.hooks import SYSCALLS, State, missing_concerns
from dmabuf_top.probes.tracer import Tracer

pytestmark = pytest.mark.root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
libc.preadv2.restype = ctypes.c_ssize_t
libc.preadv2.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_int)
MAP_FAILED = ctypes.c_void_p(-1).value
MAP_FIXED = 0x10  # <sys/mman.h>; Python's mmap module does not export it


@pytest.fixture(scope="module")
def report():
    return features.detect()


@pytest.fixture
def cold_file():
    """4 MiB of random bytes on the checkout's filesystem, written, synced and evicted from the page cache."""
    build = os.path.join(ROOT, "build")
    os.makedirs(build, exist_ok=True)
    path = os.path.join(build, f"tracing-host-{os.getpid()}.bin")
    data = os.urandom(4 << 20)
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
        os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    yield path, data
    os.unlink(path)


def has_page_cache(path):
    """A block filesystem keeps pages after a read; virtiofs/overlay setups may not: say so instead of failing."""
    with open("/proc/self/mountinfo") as mounts:
        fs = max((line for line in mounts if path.startswith(line.split()[4])), key=lambda entry: len(entry.split()[4]))
    return fs.split(" - ")[1].split()[0] in ("ext4", "xfs", "btrfs")


def test_tracepoint_subset_is_live_and_the_rest_says_why(report):
    with Tracer(report=report) as tracer:
        hooks = {hook.program: hook for hook in tracer.hooks}
    # One program on the raw syscall tracepoints: tp_btf where the kernel takes it (this one does), else raw_tp.
    via = "tp_btf" if report.available("tp_btf") else "raw_tp"
    for syscall in SYSCALLS:
        assert hooks[f"enter_{syscall}"].live and hooks[f"exit_{syscall}"].via == via
        assert hooks[f"enter_{syscall}"].concern == SYSCALLS[syscall]
    assert tracer.programs["syscall_enter_raw"].state is State.NOT_NEEDED
    assert hooks["pagecache_add"].live and hooks["pagecache_delete"].live
    missing = missing_concerns(tracer.hooks)
    if not report.available("fentry"):
        # This CI kernel: fentry refused with EPERM, no kprobes, no dma_buf tracepoints (6.18).
        assert {"cpu_copy", "gup"} <= set(missing)
        assert "EPERM" in missing["cpu_copy"] and "kprobe refused" in missing["cpu_copy"]
        assert not hooks["copy_filemap_read"].live
    if (not kernelfs.tracepoint_exists(kernelfs.tracefs_root(), "dma_buf:dma_buf_export")
            and not report.available("fentry")):
        assert "absent" in missing["lifecycle"] or "refused" in missing["lifecycle"]


def test_reading_a_cold_file_into_a_memfd_mapping_is_attributed_to_the_memfd(report, cold_file):
    """The destination address resolves (bpf_find_vma) to the memfd mapped there; the page cache is exact."""
    path, data = cold_file
    if not has_page_cache(path):
        pytest.skip(f"{path} is not on a block filesystem here")
    st = os.stat(path)
    memfd = os.memfd_create("tracing-host")
    os.ftruncate(memfd, len(data))
    mapping = mmap.mmap(memfd, len(data))
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    fd = os.open(path, os.O_RDONLY)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            for offset in range(0, len(data), 1 << 20):
                assert libc.pread(fd, address + offset, 1 << 20, offset) == 1 << 20
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            snap = tracer.snapshot()
        assert mapping[:] == data
        memfd_inode = os.fstat(memfd).st_ino
    finally:
        os.close(fd)
        mapping.close()
        os.close(memfd)
    pages = len(data) // PAGE
    assert snap.pagecache[(st.st_ino, st.st_dev)] == (pages, pages)
    (target, read), = [(t, c) for t, c in snap.by_target.items() if t.inode == memfd_inode]
    assert (target.path, target.kind, target.direct) == ("read", "shmem", False)
    assert (read.calls, read.errors, read.bytes, read.requested) == (4, 0, len(data), len(data))
    assert read.pc_added == pages and read.pc_removed == 0
    assert sum(read.latency_hist) == 4 and read.latency_ns > 0


def test_copy_file_range_on_one_filesystem_is_counted_with_both_ends(report, cold_file):
    path, data = cold_file
    copy = path + ".copy"
    fd_in = os.open(path, os.O_RDONLY)
    fd_out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            copied = 0
            while copied < len(data):
                copied += os.copy_file_range(fd_in, fd_out, 1 << 20)
            snap = tracer.snapshot()
    finally:
        os.close(fd_in)
        os.close(fd_out)
    with open(copy, "rb") as result:
        assert result.read() == data
    os.unlink(copy)
    outcomes = {o: v for o, v in snap.outcomes.items() if o.path == "copy_file_range"}
    (outcome, value), = outcomes.items()
    assert (outcome.src_kind, outcome.dst_kind, outcome.error) == ("file", "file", 0)
    assert outcome.src_fs == outcome.dst_fs != "-"
    assert value == {"calls": 4, "bytes": len(data), "requested": len(data)}


def test_dropped_records_are_counted_and_account_for_every_call(report, cold_file):
    path, _ = cold_file
    fd = os.open(path, os.O_RDONLY)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report, record=True) as tracer:
            for _ in range(20000):
                os.pread(fd, 8, 0)
            records = tracer.drain_records()
            snap = tracer.snapshot()
    finally:
        os.close(fd)
    assert snap.dropped > 0
    calls = sum(c.calls for c in snap.per_path().values())
    assert len(records) + snap.dropped == calls
    assert {r.tgid for r in records} == {os.getpid()}


def test_the_trace_command_shows_paths_missing_hooks_and_drops():
    from click.testing import CliRunner

    from dmabuf_top.cli import cli

    result = CliRunner().invoke(cli, ["trace", "--", "cat", os.path.join(ROOT, "README.md")])
    assert result.exit_code == 0, result.output
    assert "read" in result.output and "dropped events: 0" in result.output
    if "n/t" in result.output:
        assert "not traced:" in result.output


def test_the_trace_command_lists_each_hook_with_its_state():
    """--hooks: live (and how), MISSING or NOT NEEDED: a fallback whose primary is live is not missing."""
    from click.testing import CliRunner

    from dmabuf_top.cli import cli

    result = CliRunner().invoke(cli, ["trace", "--hooks"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines and all(" live via " in line or " MISSING " in line or " NOT NEEDED " in line for line in lines)
    # Without -p there is no process whose children to follow: that hook is not needed, not missing.
    (children,) = [line for line in lines if line.startswith("children ")]
    assert "NOT NEEDED" in children and "no process to follow" in children


def _memfd_with(byte, size):
    memfd = os.memfd_create(f"tracing-{chr(byte)}")
    os.write(memfd, bytes([byte]) * size)
    return memfd


def _map_at(address, size, fd):
    """mmap fd over [address, address + size) (MAP_FIXED), or anonymous memory there when fd is -1."""
    flags = (MAP_FIXED if address else 0) | (mmap.MAP_SHARED if fd >= 0 else mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    got = libc.mmap(address, size, mmap.PROT_READ | mmap.PROT_WRITE, flags, fd, 0)
    assert got not in (None, MAP_FAILED) and (address is None or got == address), ctypes.get_errno()
    return got


def _read_targets(snap):
    return {(t.kind, t.inode): c.calls for t, c in snap.by_target.items() if t.path == "read"}


def test_a_buffer_remapped_between_two_reads_is_attributed_to_what_is_mapped_now(report, cold_file):
    """The tracer reuses a thread's last mapping lookup while the address space is unchanged: a remap at the
    same address, by this thread or another, must show up at the next read (never the old file)."""
    path, data = cold_file
    size = 1 << 20
    first, second = _memfd_with(ord("a"), size), _memfd_with(ord("b"), size)
    first_inode, second_inode = os.fstat(first).st_ino, os.fstat(second).st_ino
    fd = os.open(path, os.O_RDONLY)
    address = _map_at(None, size, -1)
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            def read_here():
                assert libc.pread(fd, address, size, 0) == size

            _map_at(address, size, first)
            read_here()
            read_here()  # the same mapping again: the remembered answer
            after_first = _read_targets(tracer.snapshot())
            _map_at(address, size, second)
            read_here()
            after_second = _read_targets(tracer.snapshot())
            worker_started, remapped, done = threading.Event(), threading.Event(), threading.Event()

            def worker():
                read_here()  # this thread's own answer: the second memfd
                worker_started.set()
                remapped.wait(10)
                read_here()  # remapped by the main thread meanwhile: anonymous memory now
                done.set()

            thread = threading.Thread(target=worker)
            thread.start()
            worker_started.wait(10)
            _map_at(address, size, -1)
            remapped.set()
            thread.join(10)
            assert done.is_set()
            after_threads = _read_targets(tracer.snapshot())
    finally:
        libc.munmap(address, size)
        for opened in (fd, first, second):
            os.close(opened)
    assert after_first.get(("shmem", first_inode)) == 2 and ("shmem", second_inode) not in after_first
    assert after_second.get(("shmem", first_inode)) == 2 and after_second.get(("shmem", second_inode)) == 1
    assert after_threads.get(("shmem", first_inode)) == 2 and after_threads.get(("shmem", second_inode)) == 2
    anonymous = after_threads.get(("none", 0), 0) - after_second.get(("none", 0), 0)
    assert anonymous >= 1  # the worker's second read (Python's own reads in between land here too)


def test_the_raw_tp_fallback_counts_what_tp_btf_counts(report, cold_file):
    """A kernel that refuses tp_btf gets the raw_tp programs: the same syscalls, the same exact counts."""
    if not report.available("raw_tracepoint"):
        pytest.skip("this kernel has no raw tracepoints either")
    path, data = cold_file
    features_without_tp_btf = dict(report.features, tp_btf=features.Feature(False, None, "refused (test)"))
    without_tp_btf = dataclasses.replace(report, features=features_without_tp_btf)
    memfd = _memfd_with(ord("c"), PAGE)
    memfd_inode = os.fstat(memfd).st_ino
    target = _map_at(None, PAGE, memfd)
    fd = os.open(path, os.O_RDONLY)
    iov = (ctypes.c_void_p * 2)(target, PAGE)  # one struct iovec {base, len}
    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=without_tp_btf) as tracer:
            hooks = {hook.program: hook for hook in tracer.hooks}
            for offset in range(0, 64 * PAGE, PAGE):
                assert libc.pread(fd, target, PAGE, offset) == PAGE
            assert libc.preadv2(fd, iov, 1, 0, 0) == PAGE
            snap = tracer.snapshot()
    finally:
        libc.munmap(target, PAGE)
        os.close(fd)
        os.close(memfd)
    assert hooks["enter_pread64"].via == "raw_tp" and hooks["exit_preadv2"].via == "raw_tp"
    assert "tp_btf not available" in tracer.programs["syscall_enter_btf"].why
    (found, counters), = [(t, c) for t, c in snap.by_target.items() if t.inode == memfd_inode]
    assert (found.path, found.kind) == ("read", "shmem")
    assert (counters.calls, counters.errors, counters.bytes, counters.requested) == (65, 0, 65 * PAGE, 65 * PAGE)


def test_a_detached_tracer_counts_nothing_until_it_is_attached_again(report, cold_file):
    """benchmarks/overhead.py switches modes by detach/reattach, every few milliseconds."""
    path, _data = cold_file
    memfd = os.memfd_create("tracing-detach")
    os.ftruncate(memfd, PAGE)
    mapping = mmap.mmap(memfd, PAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    fd = os.open(path, os.O_RDONLY)

    def reads(n):
        for i in range(n):
            assert libc.pread(fd, address, PAGE, i * PAGE) == PAGE

    try:
        with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
            inode = os.fstat(memfd).st_ino

            def calls():
                return sum(c.calls for t, c in tracer.snapshot().by_target.items() if t.inode == inode)

            reads(5)
            assert calls() == 5
            tracer.detach()
            reads(7)
            assert calls() == 5
            tracer.reattach()
            reads(3)
            assert calls() == 8
    finally:
        os.close(fd)
        mapping.close()
        os.close(memfd)


SHARED_MEMORY_READER = os.path.join(ROOT, "tests", "shared_memory_reader.py")  # see its docstring


@pytest.mark.parametrize("mode", ["map", "fork", "shmat", "memfd-fd"])
def test_the_syscall_path_skips_ordinary_reads_until_the_process_maps_shared_memory(report, cold_file, mode):
    """Every process traced (as the live view and export run it), on the syscall tracepoints: a process that
    maps no dma-buf, memfd or device memory has its reads of an ordinary file into anonymous memory pass
    uncounted (its calls open no record); once it maps a memfd (mmap's exit) or System V shared memory
    (shmat's exit), every read is counted, and so is a child forked after the mapping from its first read;
    a read of a memfd by its fd is counted without any mapping."""
    path, _data = cold_file
    with Tracer(report=report, stacks=False) as tracer:
        if tracer.attribution != "syscalls":
            pytest.skip("the VFS path is used here (tests/vm/test_tracing.py covers it)")
        assert tracer.programs["shared_memory_seed"].live
        out = subprocess.run([sys.executable, SHARED_MEMORY_READER, path, "300", "40", mode], check=True,
                             capture_output=True, text=True).stdout
        snapshot = tracer.snapshot()
    _, reader = map(int, out.split())
    calls = sum(c.calls for (task, p), c in snapshot.by_task.items() if task == reader and p == "read")
    assert 40 <= calls < 300, snapshot.by_task  # the 300 before the mapping: none


def test_a_process_that_mapped_shared_memory_before_the_tracer_started_is_traced_from_its_first_read(
        report, cold_file):
    """The seeding iterator sets the bit of processes whose mappings predate the tracer (the syscall path
    has no mmap exit to see them)."""
    path, _data = cold_file
    memfd = os.memfd_create("tracing-seed")
    os.ftruncate(memfd, PAGE)
    mapping = mmap.mmap(memfd, PAGE)
    fd = os.open(path, os.O_RDONLY)
    try:
        with Tracer(report=report, stacks=False, ignore_self=False) as tracer:
            for _ in range(25):
                os.pread(fd, 4096, 0)
            snapshot = tracer.snapshot()
    finally:
        os.close(fd)
        mapping.close()
        os.close(memfd)
    assert sum(c.calls for (task, p), c in snapshot.by_task.items() if task == os.getpid() and p == "read") >= 25


def test_the_syscall_path_finds_at_the_next_snapshot_a_mapping_no_mmap_exit_saw(report, cold_file):
    """A mapping a driver makes inside an ioctl (vm_mmap) reaches neither mmap's nor shmat's exit, so on the
    syscall path the process's bit stays clear and its reads pass uncounted. Each snapshot runs the seeding
    iterator again, which sees every mapping: the miss lasts one interval. Stand-in for the unseen mapping: a
    process that maps a memfd, whose bit is then cleared in the tracer's own map."""
    path, _data = cold_file
    memfd = os.memfd_create("tracing-reseed")
    os.ftruncate(memfd, PAGE)
    mapping = mmap.mmap(memfd, PAGE)
    fd = os.open(path, os.O_RDONLY)

    def my_reads(snapshot):
        return sum(c.calls for (task, p), c in snapshot.by_task.items() if task == os.getpid() and p == "read")

    try:
        with Tracer(report=report, stacks=False, ignore_self=False) as tracer:
            if tracer.attribution != "syscalls":
                pytest.skip("the VFS path is used here: mmap_region's fentry sees every mapping")
            obj = tracer._obj
            bss = next(m for m in obj.maps.values() if m.name.endswith(".bss"))
            offset, size = obj.datasec_layout(".bss")["shared_memory_tgids"]
            key = (0).to_bytes(4, "little")
            cleared = bytearray(bss.lookup(key))
            cleared[offset:offset + size] = bytes(size)
            bss.update(key, cleared)
            for _ in range(25):
                os.pread(fd, 4096, 0)
            unseen = my_reads(tracer.snapshot())  # reseeds first, then reads the counters
            for _ in range(25):
                os.pread(fd, 4096, 0)
            seen = my_reads(tracer.snapshot())
    finally:
        os.close(fd)
        mapping.close()
        os.close(memfd)
    assert unseen == 0  # the bit really was clear: the stand-in holds
    assert seen >= 25
