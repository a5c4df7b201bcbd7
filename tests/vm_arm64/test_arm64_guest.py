"""What can differ on arm64, checked in the emulated arm64 guest: the BPF objects built for arm64 load and
relocate (CO-RE) against the arm64 kernel, the hooks doctor reports, the heaps (system and CMA), snapshot's
buffers, and the I/O syscalls told apart by their arm64 numbers (read 63, pread64 67)."""
import ctypes
import json
import os
import subprocess

import pytest

from dmabuf_top import features
from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
from dmabuf_top.inventory.index import BufferIndex
from dmabuf_top.probes import object_path
from dmabuf_top.probes.dmabuf_iter import read_buffers
from dmabuf_top.probes.tracer import Tracer

pytestmark = pytest.mark.guest

MiB = 1 << 20
SCRATCH = "/mnt/scratch"
libc = ctypes.CDLL(None, use_errno=True)
libc.read.restype = ctypes.c_ssize_t
libc.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long)


def dmabuf_top(*args):
    """The command as a user runs it in the guest: the console script on PATH."""
    result = subprocess.run(["dmabuf-top", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_objects_loaded_are_the_arm64_ones():
    assert object_path("iopaths").name == "iopaths.arm64.bpf.o"


def test_doctor_shows_the_iterator_fentry_and_udmabuf():
    doc = json.loads(dmabuf_top("doctor", "--json"))
    assert doc["kernel"]["machine"] == "aarch64"
    available = {name for name, feature in doc["features"].items() if feature["available"]}
    assert {"iter/dmabuf", "fentry", "fexit", "tp_btf", "kprobe", "ringbuf", "udmabuf", "btf"} <= available


def test_doctor_shows_the_system_and_cma_heaps(heaps):
    doc = json.loads(dmabuf_top("doctor", "--json"))
    assert doc["features"]["heaps"]["available"]
    assert "system" in heaps
    assert cma_heap(heaps), f"no CMA heap among {heaps} although cma= is on the command line"


def cma_heap(heaps):
    # The default CMA area's heap is named after the area: "reserved" (cma= on the command line) or the
    # device tree's "linux,cma".
    return next((name for name in heaps if name in ("reserved", "linux,cma") or "cma" in name), None)


def test_snapshot_lists_a_udmabuf_with_its_exporter_and_size():
    with alloc_udmabuf(3 * MiB, name="arm64-udmabuf") as buf:
        doc = json.loads(dmabuf_top("snapshot", "--json"))
    entry = next(e for e in doc["buffers"] if e["inode"] == buf.inode)
    assert (entry["exporter"], entry["size"]) == ("udmabuf", 3 * MiB)


def test_snapshot_lists_a_cma_buffer_with_its_exporter_and_size(heaps):
    heap = cma_heap(heaps)
    with alloc_heap(2 * MiB, heap=heap, name="arm64-cma") as buf:
        doc = json.loads(dmabuf_top("snapshot", "--json"))
    entry = next(e for e in doc["buffers"] if e["inode"] == buf.inode)
    assert (entry["exporter"], entry["size"]) == (buf.exporter, 2 * MiB)


def test_read_and_pread_into_a_udmabuf_are_counted_by_their_arm64_syscall_numbers():
    """The syscall path of iopaths.bpf.c reads the number and arguments from arm64's pt_regs (CO-RE
    flavours): one read(2) and one pread64(2) into the buffer's memfd mapping, each of 1 MiB."""
    size = 1 * MiB
    path = os.path.join(SCRATCH if os.path.ismount(SCRATCH) else "/tmp", "arm64-read.bin")
    with open(path, "wb") as out:
        out.write(os.urandom(2 * size))
    report = features.detect()
    try:
        with alloc_udmabuf(2 * size, name="arm64-read") as buf:
            mapping = buf.mmap_memfd()
            address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
            fd = os.open(path, os.O_RDONLY)
            try:
                with Tracer(pid=os.getpid(), ignore_self=False, report=report) as tracer:
                    assert libc.read(fd, address, size) == size
                    assert libc.pread(fd, address + size, size, size) == size
                    snap = tracer.snapshot()
                inventory = read_buffers()
            finally:
                os.close(fd)
                mapping.close()
    finally:
        os.unlink(path)
    index = BufferIndex()
    index.learn(inventory)
    counters = index.per_buffer(snap.by_target)[buf.inode]["read"]
    assert (counters.calls, counters.errors, counters.bytes, counters.requested) == (2, 0, 2 * size, 2 * size)
