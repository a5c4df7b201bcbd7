"""The bounds benchmarks/overhead.py --exact --ci-hooks reads the CI host's target against
(probes/hook_floor.bpf.c): each does what it claims on the raw syscall tracepoints of this kernel, so a
bound that did nothing (and so cost nothing) would fail here, not pass unnoticed as "fits"."""
import contextlib
import mmap
import os

import pytest

from dmabuf_top.bpf import BpfObject
from dmabuf_top.probes import object_path

ZERO = (0).to_bytes(4, "little")
TGID_BIT_WORDS = 1 << 16  # probes/syscall_path.h
CPU_WORD = 64  # hook_floor.bpf.c's struct bound_cpu_word: a cache line per CPU


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


@contextlib.contextmanager
def on_one_cpu():
    """This thread on one of its CPUs (per-CPU values: ours all land in that CPU's slot); yields the CPU."""
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


def _mark(obj, tgid):
    """Set tgid's bit in bound_tgids, as a tracer would for a process of interest."""
    bss, layout = _bss(obj)
    offset, _size = layout["bound_tgids"]
    value = bytearray(bss.lookup(ZERO))
    word = offset + 8 * ((tgid >> 6) & (TGID_BIT_WORDS - 1))
    value[word:word + 8] = (int.from_bytes(value[word:word + 8], "little") | 1 << (tgid & 63)).to_bytes(8, "little")
    bss.update(ZERO, value)


def test_the_least_attribution_names_the_file_of_each_read(cached_fd):
    with attached("least_attribution_syscall_exit_btf") as obj, on_one_cpu() as cpu:
        sums = obj.map("bound_sums")
        for _ in range(10):
            os.pread(cached_fd, 4096, 0)
        first = sums.split_percpu(sums.lookup(ZERO))[cpu]
        named = []
        for _ in range(50):  # another process's read on this CPU may land between ours and the lookup
            os.pread(cached_fd, 4096, 0)
            named.append(int.from_bytes(sums.split_percpu(sums.lookup(ZERO))[cpu][8:16], "little"))
    assert int.from_bytes(first[0:8], "little") >= 10 * 4096
    assert os.fstat(cached_fd).st_ino in named


def test_the_least_check_leaves_a_read_at_its_process_bit_and_a_getppid_at_its_number(cached_fd):
    with attached("least_check_syscall_enter_btf") as obj:
        before = _hits(obj)
        for _ in range(20):
            os.pread(cached_fd, 4096, 0)  # no process's bit is set: every read leaves at it
        after_clear = _hits(obj)
        _mark(obj, os.getpid())
        for _ in range(20):
            os.pread(cached_fd, 4096, 0)  # ours is now: each passes it
        after_marked = _hits(obj)
        for _ in range(20):
            os.getppid()  # not a syscall the bitmap names: it leaves before the bit is looked at
        after_getppid = _hits(obj)
    assert after_clear == before
    assert after_marked - after_clear >= 20
    assert after_getppid == after_marked + 1  # only ours is marked; its one bitmap call since: the lookup's bpf()


def test_the_least_check_exit_looks_at_the_calls_whose_exit_keeps_the_bits():
    with attached("least_check_syscall_exit_btf") as obj:
        before = _hits(obj)
        with mmap.mmap(-1, 4096):
            pass  # mmap's exit is one of the calls the exit looks at
        after_mmap = _hits(obj)
    assert after_mmap > before


def test_the_least_cpu_check_leaves_every_call_at_this_cpus_flag(cached_fd):
    with attached("least_cpu_check_syscall_enter_btf") as obj, on_one_cpu() as cpu:
        bss, layout = _bss(obj)
        offset, _size = layout["bound_cpu_flags"]
        slot = offset + CPU_WORD * cpu
        before = _hits(obj)
        for _ in range(20):
            os.pread(cached_fd, 4096, 0)  # every CPU's flag is clear: every read leaves at it
        after_clear = _hits(obj)
        value = bytearray(bss.lookup(ZERO))
        value[slot:slot + 8] = (1).to_bytes(8, "little")
        bss.update(ZERO, value)
        for _ in range(20):
            os.pread(cached_fd, 4096, 0)  # this CPU's flag is set: each passes it, and its number is a read
        after_set = _hits(obj)
    assert after_clear == before
    assert after_set - after_clear >= 20


def test_the_least_count_adds_each_reads_bytes_to_its_cpus_sum(cached_fd):
    def this_cpus_sum(obj, cpu):
        bss, layout = _bss(obj)
        offset, _size = layout["bound_cpu_sums"]
        slot = offset + CPU_WORD * cpu
        return int.from_bytes(bss.lookup(ZERO)[slot:slot + 8], "little")

    with attached("least_count_syscall_exit_btf") as obj, on_one_cpu() as cpu:
        before = this_cpus_sum(obj, cpu)
        for _ in range(10):
            os.pread(cached_fd, 4096, 0)
        after = this_cpus_sum(obj, cpu)
    # Other processes' reads on this CPU add to it too, never less: a bound that counted nothing fails here.
    assert after - before >= 10 * 4096
