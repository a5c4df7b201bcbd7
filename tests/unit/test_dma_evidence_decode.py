"""dma_evidence.py's decoding and intersection, without a kernel."""
import ctypes
import struct

import pytest

from dmabuf_top.bpf import struct_size_in_object
from dmabuf_top.errors import BpfError
from dmabuf_top.probes import object_path
from dmabuf_top.probes.dma_evidence import (
    PAGEMAP_PRESENT,
    DeviceWrites,
    DmaEvidenceFile,
    DmaEvidenceFilePage,
    DmaEvidenceFileWrite,
    DmaEvidenceStats,
    DmaEvidenceTgid,
    FilePages,
    Intersection,
    Stats,
    decode_pagemap,
    decode_pages,
    decode_stats,
    decode_tgids,
    intersect,
)


def test_the_ctypes_mirrors_match_the_compiled_structs():
    path = object_path("dma_evidence")
    assert struct_size_in_object(path, "dma_evidence_stats") == ctypes.sizeof(DmaEvidenceStats)
    assert struct_size_in_object(path, "dma_evidence_tgid") == ctypes.sizeof(DmaEvidenceTgid)
    assert struct_size_in_object(path, "dma_evidence_file_page") == ctypes.sizeof(DmaEvidenceFilePage)
    assert struct_size_in_object(path, "dma_evidence_file_write") == ctypes.sizeof(DmaEvidenceFileWrite)
    assert struct_size_in_object(path, "dma_evidence_file") == ctypes.sizeof(DmaEvidenceFile)


def _stats(**values):
    return bytes(DmaEvidenceStats(**values))


def test_stats_of_all_cpus_are_summed_and_the_layout_facts_kept():
    per_cpu = [_stats(read_requests=2, recorded_bytes=8192, map_full_bytes=4096, vmemmap_base=0xffffea0000000000,
                      page_struct_size=64),
               _stats(read_requests=1, recorded_bytes=4096, loop_bound_bytes=512, unplaced_bytes=1),
               b"\0" * ctypes.sizeof(DmaEvidenceStats)]
    stats = decode_stats(per_cpu)
    assert (stats.read_requests, stats.recorded_bytes) == (3, 12288)
    assert (stats.vmemmap_base, stats.page_struct_size) == (0xffffea0000000000, 64)
    assert stats.lost_bytes == 4096 + 512 + 1
    assert decode_stats([]) == Stats()


def test_a_short_stats_value_is_a_layout_error():
    with pytest.raises(BpfError, match="make bpf"):
        decode_stats([b"\0" * 8])


def test_pages_and_tgids_decode_from_map_entries():
    pages = decode_pages([(struct.pack("<Q", 0x1234), struct.pack("<Q", 4096)),
                          (struct.pack("<Q", 7), struct.pack("<Q", 512))])
    assert pages == {0x1234: 4096, 7: 512}
    tgids = decode_tgids([(struct.pack("<I", 42), bytes(DmaEvidenceTgid(bytes=1 << 20, bios=3)))])
    assert tgids == {42: 1 << 20}
    with pytest.raises(BpfError):
        decode_pages([(b"\0" * 4, b"\0" * 8)])
    with pytest.raises(BpfError):
        decode_tgids([(b"\0" * 4, b"\0" * 8)])


def test_intersect_splits_the_devices_bytes_between_the_buffer_and_elsewhere():
    device = {10: 4096, 11: 4096, 12: 2048, 99: 4096}
    seen = intersect(DeviceWrites(device), [10, 11, 12, 13, None])
    assert seen == Intersection(into_buffer=10240, elsewhere=4096, buffer_pages=4, buffer_pages_written=3,
                                unmapped_pages=1, covered=10240)


def test_a_frame_mapped_twice_counts_once_and_a_frame_written_twice_counts_twice():
    seen = intersect(DeviceWrites({5: 8192}), [5, 5])
    assert (seen.into_buffer, seen.elsewhere, seen.buffer_pages, seen.buffer_pages_written) == (8192, 0, 1, 1)
    assert seen.covered == 4096  # one page of the buffer, however often written


def test_nothing_written_is_nothing_anywhere():
    assert intersect(DeviceWrites({}), [1, 2]) == Intersection(0, 0, 2, 0, 0)
    assert intersect(DeviceWrites({1: 4096}), []) == Intersection(0, 4096, 0, 0, 0)


def test_a_page_is_matched_by_its_place_and_a_frame_only_by_what_the_device_wrote_by_frame():
    # Place (1, 7, 0) in frame 50: the memfd's. Place (1, 8, 0), written in frame 60: another file's page, which the
    # kernel moved since; frame 60 went to the buffer (a heap buffer, or a udmabuf over a copy), so it is no credit.
    # Place (1, 9, 2): a udmabuf's page, named by place. Place (1, 7, 9): beyond the memfd's 4 pages. Frame 70: a
    # page of no file, the buffer's.
    writes = DeviceWrites({70: 4096}, places={(1, 7, 0): (4096, 50), (1, 8, 0): (4096, 60), (1, 7, 9): (4096, 90),
                                              (1, 9, 2): (4096, 61)})
    seen = intersect(writes, [60, 70, (1, 9, 2)], [FilePages(1, 7, 4)])
    assert (seen.into_buffer, seen.elsewhere, seen.buffer_pages, seen.buffer_pages_written) == (12288, 8192, 7, 3)
    assert writes.total == 20480


def test_a_udmabufs_page_that_is_also_its_memfds_counts_once():
    # The command held the udmabuf (its pages by place: the memfd's pages 0-3) and the memfd itself.
    writes = DeviceWrites({}, places={(1, 7, index): (4096, 100 + index) for index in range(4)})
    seen = intersect(writes, [(1, 7, 0), (1, 7, 1), (1, 7, 2), (1, 7, 3)], [FilePages(1, 7, 4)])
    assert (seen.into_buffer, seen.buffer_pages, seen.buffer_pages_written) == (16384, 4, 4)
    only_udmabuf = intersect(writes, [(1, 7, 0), (1, 7, 1), (1, 7, 1), None])  # a page named twice, one unnamed
    assert (only_udmabuf.into_buffer, only_udmabuf.buffer_pages, only_udmabuf.unmapped_pages) == (8192, 2, 1)


def test_pagemap_entries_give_frames_of_present_pages_only():
    raw = struct.pack("<QQQ", PAGEMAP_PRESENT | 0x1abcd, 0, PAGEMAP_PRESENT | (1 << 61) | 5)
    assert decode_pagemap(raw) == [0x1abcd, None, 5]
    with pytest.raises(ValueError):
        decode_pagemap(b"\0" * 7)


def test_frame_runs_expand_to_pages_in_buffer_order():
    from dmabuf_top.probes.dma_evidence import BY_FRAME, BY_PLACE, UNNAMED, DmaEvidenceFrames, decode_frame_runs

    path = object_path("dma_evidence")
    assert struct_size_in_object(path, "dma_evidence_frames") == ctypes.sizeof(DmaEvidenceFrames)
    assert struct_size_in_object(path, "dma_evidence_frame_count") == 24
    def run(pfn, pages, named_by=BY_FRAME, ino=0, index=0, dev=0):
        return bytes(DmaEvidenceFrames(pfn=pfn, pages=pages, ino=ino, index=index, dev=dev, named_by=named_by))

    pairs = [(struct.pack("<I", 1), run(7, 1)), (struct.pack("<I", 0), run(100, 3, BY_PLACE, 40, 5, 9)),
             (struct.pack("<I", 2), run(300, 2, UNNAMED)),
             (struct.pack("<I", 3), run(0, 0))]  # a slot past the count: ignored
    pages = decode_frame_runs(pairs, 3)
    assert pages.frames == [100, 101, 102, 7, 300, 301]
    # The run's pages by their places in file (9, 40) from offset 5; frame 7 by its frame; 300-301 named neither way.
    assert pages.keys == [(9, 40, 5), (9, 40, 6), (9, 40, 7), 7, None, None]
    with pytest.raises(BpfError):
        decode_frame_runs(pairs, 5)
    with pytest.raises(BpfError):  # the layout before pages had names
        decode_frame_runs([(struct.pack("<I", 0), struct.pack("<QQ", 100, 3))], 1)
