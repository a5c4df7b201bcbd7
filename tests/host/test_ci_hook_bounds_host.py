"""The bounds benchmarks/overhead.py --exact --ci-hooks reads the CI host's target against
(probes/hook_floor.bpf.c): each does what it claims on the raw syscall tracepoints of this kernel, so a
bound that did nothing (and so cost nothing) would fail here, not pass unnoticed as "within reach"."""
import contextlib
import mmap
import os

import pytest

from dmabuf_top.bpf import BpfObject
from dmabuf_top.probes import object_path

ZERO = (0).to_bytes(4, "little")


def _bss(obj):
    bss = next(m for m in obj.maps.values() if m.name.endswith(".bss"))
    return bss, obj.datasec_layout(".bss")


def _hits(obj):
    bss, layout = _bss(obj)
    offset, size = layout["bound_hits"]
    return int.from_bytes(bss.lookup(ZERO)[offset:offset + size], "little")


@pytest.fixture
def cached_fd(tmp_path):
    """An fd of a one-page file in the page cache: what each bound's reads read."""
    path = tmp_path / "bound.bin"
    path.write_bytes(os.urandom(4096))
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


@contextlib.contextmanager
def attached(*programs):
    """hook_floor's `programs`, loaded alone and attached."""
    with BpfObject(object_path("hook_floor")) as obj:
        obj.only(*programs).load()
        for name in programs:
            obj.program(name).attach()
        yield obj


def test_the_least_attribution_names_the_file_of_each_read(cached_fd):
    fd = cached_fd
    with attached("least_attribution_syscall_exit_btf") as obj:
        os.sched_setaffinity(0, {0})  # the per-CPU sum of one CPU: this thread's reads all land there
        try:
            for _ in range(10):
                os.pread(fd, 4096, 0)
            first = obj.map("bound_sums").split_percpu(obj.map("bound_sums").lookup(ZERO))[0]
            named = []
            for _ in range(50):  # another process's read on CPU 0 may land between ours and the lookup
                os.pread(fd, 4096, 0)
                last = obj.map("bound_sums").split_percpu(obj.map("bound_sums").lookup(ZERO))[0]
                named.append(int.from_bytes(last[8:16], "little"))
        finally:
            os.sched_setaffinity(0, range(os.cpu_count()))
        inode = os.fstat(fd).st_ino
    assert int.from_bytes(first[0:8], "little") >= 10 * 4096
    assert inode in named


def test_the_least_check_tests_the_process_bit_at_entry_and_the_number_at_exit(cached_fd):
    fd = cached_fd
    with attached("least_check_syscall_enter_btf", "least_check_syscall_exit_btf") as obj:
        before = _hits(obj)
        for _ in range(20):
            os.pread(fd, 4096, 0)  # our bit is clear: every one leaves at it
        after_reads = _hits(obj)
        bss, layout = _bss(obj)
        offset, _size = layout["bound_tgids"]
        value = bytearray(bss.lookup(ZERO))
        tgid = os.getpid()
        word = offset + 8 * ((tgid >> 6) & ((1 << 16) - 1))
        value[word:word + 8] = (int.from_bytes(value[word:word + 8], "little") | 1 << (tgid & 63)).to_bytes(
            8, "little")
        bss.update(ZERO, value)
        start = _hits(obj)
        for _ in range(20):
            os.pread(fd, 4096, 0)  # now each passes the bit
        after_marked = _hits(obj)
        with mmap.mmap(-1, 4096):
            pass  # mmap's exit is one of the calls the exit looks at
        after_mmap = _hits(obj)
    assert after_reads - before < 20  # other processes' mmaps may count; our 20 reads did not
    assert after_marked - start >= 20
    assert after_mmap > after_marked


def test_the_least_cpu_check_tests_this_cpus_flag_at_entry(cached_fd):
    fd = cached_fd
    with attached("least_cpu_check_syscall_enter_btf") as obj:
        flags = obj.map("bound_cpu_flags")
        stride = (flags.value_size + 7) // 8 * 8
        cpus = len(flags.split_percpu(flags.lookup(ZERO)))
        before = _hits(obj)
        for _ in range(20):
            os.pread(fd, 4096, 0)  # every CPU's flag is clear: every read leaves at it
        after_clear = _hits(obj)
        flags.update(ZERO, (1).to_bytes(8, "little").ljust(stride, b"\0") * cpus)
        for _ in range(20):
            os.pread(fd, 4096, 0)
        after_set = _hits(obj)
    assert after_clear == before
    assert after_set - after_clear >= 20
