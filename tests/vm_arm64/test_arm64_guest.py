"""What can differ on arm64, checked in the emulated arm64 guest: the BPF objects built for arm64 load and
relocate (CO-RE) against the arm64 kernel, the hooks doctor reports, the heaps (system and CMA), snapshot's
buffers, and the I/O syscalls told apart by their arm64 numbers (read 63, pread64 67).

The heaps need the lab's own arm64 kernel (`make kernel-arm64`: Debian's arm64 kernel has none), which
`dmabuf-top vm --arch arm64` boots once built."""
import ctypes
import json
import os
import subprocess

import pytest

from dmabuf_top import features
from dmabuf_top.alloc import CMA_HEAP_NAMES, alloc_heap, alloc_udmabuf, cma_heap_name
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
    features = doc["features"]
    assert features["heaps"]["available"] and "system" in heaps
    assert features["system_heap"]["available"] and features["system_heap"]["via"] == "/dev/dma_heap/system"
    # cma_heap.c (7.2) names the default area's heap DEFAULT_CMA_NAME; the area is the lab's cma=64M.
    assert features["cma_heap"]["available"], features["cma_heap"]
    assert features["cma_heap"]["via"] == "/dev/dma_heap/default_cma_region" == f"/dev/dma_heap/{cma_heap(heaps)}"
    text = dmabuf_top("doctor")
    assert any(line.split()[:2] == ["cma_heap", "yes"] for line in text.splitlines()), text


def cma_heap(heaps):
    name = cma_heap_name(heaps)
    assert name, f"no CMA heap ({', '.join(CMA_HEAP_NAMES)}) among {heaps} although cma= is on the command line"
    return name


def test_snapshot_lists_a_udmabuf_with_its_exporter_and_size():
    with alloc_udmabuf(3 * MiB, name="arm64-udmabuf") as buf:
        doc = json.loads(dmabuf_top("snapshot", "--json"))
    entry = next(e for e in doc["buffers"] if e["inode"] == buf.inode)
    assert (entry["exporter"], entry["size"]) == ("udmabuf", 3 * MiB)


def test_snapshot_lists_cma_buffers_with_their_exporter_and_sizes(heaps):
    """Two CMA buffers of known sizes (contiguous runs of the 64 MiB area) beside a system-heap one: each is
    listed with the heap's name as its exporter (cma_heap_allocate: exp_name = dma_heap_get_name) and its size,
    and the exporters table counts the CMA heap's buffers and bytes apart from the system heap's."""
    heap = cma_heap(heaps)
    with alloc_heap(1 * MiB, heap=heap, name="arm64-cma-1m") as one, \
            alloc_heap(3 * MiB, heap=heap, name="arm64-cma-3m") as three, \
            alloc_heap(2 * MiB, name="arm64-system-2m") as system:
        doc = json.loads(dmabuf_top("snapshot", "--json"))
        table = dmabuf_top("snapshot", "--buffers")
    by_inode = {e["inode"]: e for e in doc["buffers"]}
    assert (by_inode[one.inode]["exporter"], by_inode[one.inode]["size"]) == ("default_cma_region", 1 * MiB)
    assert (by_inode[three.inode]["exporter"], by_inode[three.inode]["size"]) == ("default_cma_region", 3 * MiB)
    assert (by_inode[system.inode]["exporter"], by_inode[system.inode]["size"]) == ("system", 2 * MiB)
    assert one.exporter == three.exporter == "default_cma_region"
    exporters = {e["exporter"]: e for e in doc["exporters"]}
    assert exporters["default_cma_region"]["buffers"] >= 2 and exporters["default_cma_region"]["bytes"] >= 4 * MiB
    assert f"{one.inode}" in table and "default_cma_region" in table and "arm64-cma-3m" in table


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


@pytest.mark.parametrize("source", ["iterator", "bufinfo", "fdinfo"])
def test_every_inventory_source_names_a_cma_buffer_and_its_size(heaps, source):
    """The iterator (dma_buf->exp_name), debugfs bufinfo and /proc/PID/fdinfo (exp_name:) agree on a CMA buffer."""
    with alloc_heap(2 * MiB, heap=cma_heap(heaps), name="arm64-cma-sources") as buf:
        doc = json.loads(dmabuf_top("snapshot", "--json", "--source", source))
    entry = next(e for e in doc["buffers"] if e["inode"] == buf.inode)
    assert (entry["exporter"], entry["size"]) == ("default_cma_region", 2 * MiB), (source, entry)


def test_the_live_view_names_a_cma_buffer(heaps):
    """One interval of `dmabuf-top live --json`: the CMA buffer's row and the exporters pane carry the heap's name."""
    with alloc_heap(4 * MiB, heap=cma_heap(heaps), name="arm64-cma-live") as buf:
        out = dmabuf_top("live", "--json", "0.5", "1")
    obj = json.loads(out.splitlines()[-1])
    row = next(b for b in obj["buffers"] if b["inode"] == buf.inode)
    assert (row["exporter"], row["size"], row["name"]) == ("default_cma_region", 4 * MiB, "arm64-cma-live")
    exporter = next(e for e in obj["exporters"] if e["exporter"] == "default_cma_region")
    assert exporter["buffers"] >= 1 and exporter["bytes"] >= 4 * MiB
