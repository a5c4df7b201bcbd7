"""Positive DMA evidence in the lab guest: real NVMe DMA into real buffers, measured per page frame.

Each loader reads a 16 MiB file from the ext4/NVMe scratch disk (page cache dropped first) while
DmaEvidence records what the device wrote for this process; the buffer's own frames come from
/proc/self/pagemap of the udmabuf's memfd mapping and, from the exporter itself, iter/dmabuf
(buffer_frames, buffer_pages): a udmabuf's own mmap and a heap buffer's mmap are VM_PFNMAP, which pagemap does
not walk. Both sources must agree where both exist. The exporter walk names a udmabuf's pages by their place in
its memfd, as the probe names the pages it sees the device write.
"""
import ctypes
import hashlib
import json
import mmap
import os
import subprocess
import time

import pytest
from guest_files import drop_caches, libc, random_file  # tests/vm is on sys.path (its conftest)
from uring_read import Ring  # tests/ is on sys.path (its conftest, rootdir-relative; no packages)

from dmabuf_top.alloc import alloc_heap, alloc_udmabuf
from dmabuf_top.probes.dma_evidence import (
    DmaEvidence,
    buffer_frames,
    buffer_pages,
    file_pages_of,
    intersect,
    mapping_address,
    mapping_pfns,
)

pytestmark = pytest.mark.guest

SIZE = 16 << 20
PAGES = SIZE // 4096
# ext4 metadata the same process may read on the way (inode table, extent blocks): well under this.
METADATA_SLACK = 1 << 20



@pytest.fixture(scope="module")
def data_file():
    """16 MiB of random bytes on the NVMe ext4 scratch disk, with its digest."""
    with random_file("dma-evidence-16m.bin", SIZE) as made:
        yield made


def pread_fully(fd, address, length, chunk=4 << 20):
    done = 0
    while done < length:
        got = libc.pread(fd, address + done, min(chunk, length - done), done)
        if got <= 0:
            raise OSError(ctypes.get_errno(), f"pread at {done} returned {got}")
        done += got
    return done


def page_cache(path):
    """The file's page-cache pages by place: their frames now are no reference (the kernel may have migrated them
    since the device wrote them: a full CI run saw 544 of 4096 moved)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return file_pages_of(fd)
    finally:
        os.close(fd)


def assert_nothing_lost(writes):
    stats = writes.stats
    assert (stats.lost_bytes, stats.error_bytes, stats.tgid_map_full) == (0, 0, 0), stats


def device_writes(path, flags, load):
    """What the device wrote for this process (nothing lost) while `load(fd)` moved the whole file, opened with
    `flags`, into a buffer; the page cache dropped first."""
    drop_caches()
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        with DmaEvidence(tgids=[os.getpid()]) as evidence:
            assert load(fd) == SIZE
            writes = evidence.read()
    finally:
        os.close(fd)
    assert_nothing_lost(writes)
    return writes


def test_both_hook_forms_load_and_vmemmap_base_comes_from_the_kernel():
    with open("/proc/kallsyms") as kallsyms:
        assert any(line.split()[2] == "vmemmap_base" for line in kallsyms)  # CONFIG_RANDOMIZE_MEMORY=y
    for hook in ("tp_btf", "raw_tp"):
        with DmaEvidence(tgids=[os.getpid()], hooks=(hook,)) as evidence:
            assert evidence.hook == hook


def udmabuf_places(buf):
    """The udmabuf's pages as the probe names them: its memfd's pages, by their place (dev, inode, offset)."""
    memfd = file_pages_of(buf.memfd)
    return [(memfd.dev, memfd.ino, index) for index in range(memfd.pages)]


def test_a_direct_read_into_a_udmabuf_is_device_writes_into_its_own_pages(data_file, udmabuf_available):
    path, digest = data_file
    with alloc_udmabuf(SIZE, name="dma-evidence-a") as buf, buf.mmap_memfd() as pages:
        frames = mapping_pfns(pages)
        writes = device_writes(path, os.O_DIRECT, lambda fd: pread_fully(fd, mapping_address(pages), SIZE))
        assert hashlib.sha256(pages[:]).hexdigest() == digest
        assert mapping_pfns(pages, populate=False) == frames  # pinned, not moved
        exported = buffer_pages(buf.inode, PAGES)
        assert buffer_frames(buf.inode, PAGES) == exported.frames == frames  # the udmabuf's own pages are the memfd's
        # named as the completion walk names the pages it sees written: by their place in the memfd
        assert exported.keys == udmabuf_places(buf)
    seen = intersect(writes, exported.keys)
    assert (seen.into_buffer, seen.buffer_pages, seen.buffer_pages_written) == (SIZE, PAGES, PAGES)
    assert seen.elsewhere < METADATA_SLACK
    assert writes.by_tgid[os.getpid()] == writes.total


def test_b_buffered_read_into_a_heap_buffer_lands_in_the_page_cache(data_file, heap_available):
    path, digest = data_file
    with alloc_heap(SIZE, name="dma-evidence-b") as buf, buf.mmap() as mapping:
        writes = device_writes(path, 0, lambda fd: pread_fully(fd, mapping_address(mapping), SIZE))
        assert hashlib.sha256(mapping[:]).hexdigest() == digest
        # The heap's mmap is VM_PFNMAP: pagemap reports none of its frames (mm/pagewalk.c walk_page_test).
        assert set(mapping_pfns(mapping)) == {None}
        heap_frames = buffer_frames(buf.inode, PAGES)
        assert buffer_pages(buf.inode, PAGES).keys == heap_frames  # a heap's pages are of no file: by frame
    assert len(set(heap_frames)) == PAGES
    assert intersect(writes, heap_frames).into_buffer == 0
    cache = intersect(writes, [], [page_cache(path)])
    # Every payload byte the device wrote went into the file's page cache: none can be in the heap's pages.
    assert (cache.into_buffer, cache.buffer_pages_written) == (SIZE, PAGES)
    assert cache.elsewhere < METADATA_SLACK


def test_c_mmap_and_memcpy_into_a_udmabuf_is_a_user_space_copy(data_file, udmabuf_available):
    path, digest = data_file

    def map_and_copy(fd):
        # MAP_PRIVATE, as loaders map weights: reading never copies on write, the pages are the page cache's.
        with mmap.mmap(fd, SIZE, access=mmap.ACCESS_COPY) as source:
            libc.memmove(mapping_address(target), mapping_address(source), SIZE)
        return SIZE

    with alloc_udmabuf(SIZE, name="dma-evidence-c") as buf, buf.mmap() as target, buf.mmap_memfd() as pages:
        frames = mapping_pfns(pages)
        writes = device_writes(path, 0, map_and_copy)
        assert hashlib.sha256(pages[:]).hexdigest() == digest
        exported = buffer_pages(buf.inode, PAGES)
        assert (exported.frames, exported.keys) == (frames, udmabuf_places(buf))
    assert intersect(writes, exported.keys).into_buffer == 0
    cache = intersect(writes, [], [page_cache(path)])
    assert (cache.into_buffer, cache.buffer_pages_written) == (SIZE, PAGES)


def test_d_io_uring_direct_read_into_a_udmabuf_is_attributed_to_the_submitter(data_file, udmabuf_available):
    path, digest = data_file

    def ring_read(fd):
        with Ring() as ring:
            return ring.read_fully(fd, mapping_address(pages), SIZE)

    # O_DIRECT into the udmabuf's own mapping (VM_PFNMAP) fails with EFAULT in pin_user_pages; loaders
    # read into the memfd mapping, whose pages the udmabuf holds.
    with alloc_udmabuf(SIZE, name="dma-evidence-d") as buf, buf.mmap_memfd() as pages:
        frames = mapping_pfns(pages)
        writes = device_writes(path, os.O_DIRECT, ring_read)
        assert hashlib.sha256(pages[:]).hexdigest() == digest
        exported = buffer_pages(buf.inode, PAGES)
        assert (exported.frames, exported.keys) == (frames, udmabuf_places(buf))
    seen = intersect(writes, exported.keys)
    assert (seen.into_buffer, seen.buffer_pages_written) == (SIZE, PAGES)
    assert seen.elsewhere < METADATA_SLACK
    assert writes.by_tgid.get(os.getpid(), 0) >= SIZE
    assert writes.stats.untraced_bytes < METADATA_SLACK


def _program_stats(names):
    shown = json.loads(subprocess.run(["bpftool", "prog", "show", "--json"], check=True,
                                      capture_output=True, text=True).stdout)
    return {p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in shown if p.get("name") in names}


def test_cost_per_request_of_the_hooks(data_file):
    """bpf_stats run time of the three programs for 4 KiB and 1 MiB O_DIRECT reads (TCG guest: emulated ns)."""
    path, _ = data_file
    names = ("bio_queue_btf", "bio_split_btf", "rq_complete_btf")
    with open("/proc/sys/kernel/bpf_stats_enabled", "r+") as control:
        was = control.read().strip()
        control.seek(0)
        control.write("1\n")
    figures = {}
    try:
        buffer = mmap.mmap(-1, 1 << 20)
        mapping_pfns(buffer)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            for label, size, count in (("4KiB", 4096, 1024), ("1MiB", 1 << 20, 64)):
                offsets = [(index * 7919 * 4096) % (SIZE - size) // 4096 * 4096 for index in range(count)]

                def reads(offsets=offsets, size=size, count=count):  # called within this iteration only
                    started = time.perf_counter_ns()
                    for offset in offsets:
                        assert libc.pread(fd, mapping_address(buffer), size, offset) == size
                    return (time.perf_counter_ns() - started) / count

                without = min(reads() for _ in range(3))
                with DmaEvidence(tgids=[os.getpid()]) as evidence:
                    before = _program_stats(names)
                    requests_before = evidence.stats().read_requests
                    with_hooks = reads()
                    after = _program_stats(names)
                    requests = evidence.stats().read_requests - requests_before
                    with_hooks = min([with_hooks] + [reads() for _ in range(2)])
                spent = {n: (after[n][0] - before.get(n, (0, 0))[0], after[n][1] - before.get(n, (0, 0))[1])
                         for n in after}
                total_ns = sum(ns for ns, _ in spent.values())
                figures[label] = {"reads": count, "requests": requests, "programs": spent,
                                  "ns_per_read": total_ns / count, "ns_per_request": total_ns / max(requests, 1),
                                  "read_ns_without_hooks": without, "read_ns_with_hooks": with_hooks}
        finally:
            os.close(fd)
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as control:
            control.write(was + "\n")
    out = os.environ.get("DMA_EVIDENCE_FIGURES")
    if out:
        with open(out, "w") as sink:
            json.dump(figures, sink, indent=1)
    print(json.dumps(figures, indent=1))
    assert figures["4KiB"]["requests"] >= 1024 and figures["1MiB"]["requests"] >= 64
    assert all(f["programs"]["rq_complete_btf"][1] >= f["requests"] for f in figures.values())
