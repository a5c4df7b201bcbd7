"""validate's DMA evidence: the pure parts (the window's losses, the judgement, the block-device check)."""
import os

import pytest

from dmabuf_top.probes.dma_evidence import PLACES_UNKNOWN, BufferPages, DeviceWrites, FilePages, Stats
from dmabuf_top.validate import evidence, verdict


def test_a_window_without_losses_is_whole():
    assert evidence.lost(Stats(map_full_bytes=5), Stats(map_full_bytes=5)) is None


def test_a_window_that_lost_bytes_says_how_many_and_why():
    why = evidence.lost(Stats(), Stats(map_full_bytes=4096, unplaced_bytes=512))
    assert "4096 bytes (its frame map was full)" in why and "512 bytes (they were in no bio vector)" in why


def test_judge_splits_the_device_writes_by_the_buffers_frames():
    found = evidence.judge(DeviceWrites({1: 4096, 2: 4096, 9: 4096}), [1, 2, 3])
    assert (found.device_bytes, found.device_to_buffer, found.buffer_pages, found.undecided) == (12288, 8192, 3, ())


def test_judge_without_frames_cannot_decide():
    found = evidence.judge(DeviceWrites({1: 4096}), None)
    assert found.device_to_buffer is None and found.undecided == ("the buffer's page frames are not known",)


def test_judge_keeps_every_reason_the_evidence_cannot_decide():
    found = evidence.judge(DeviceWrites({}), [1], (None, "no block device", "lost 4 bytes"))
    assert found.undecided == ("no block device", "lost 4 bytes")


# A memfd of 4 pages (dev 7, inode 40). The device wrote its pages 0-3 into frames 100-103; the kernel has moved
# pages 0 and 1 since (compaction, THP collapse), to frames 500 and 501. Frame 9 is someone else's page.
MOVED = DeviceWrites({9: 4096}, stats=Stats(file_places=1),
                     places={(7, 40, index): (4096, 100 + index) for index in range(4)}, written_files={(7, 40): 0})
FRAMES_NOW = [500, 501, 102, 103]


def _memfd(frames=FRAMES_NOW):
    return evidence.Memfd(FilePages(7, 40, 4), lambda: list(frames))


def test_a_memfd_whose_pages_moved_after_the_device_wrote_them_is_matched_by_place():
    # Its frames now miss the two moved pages: matched by frame, half the payload would read as copied.
    found = evidence.judge(MOVED, [], (), [_memfd()])
    assert (found.device_bytes, found.device_to_buffer, found.buffer_pages, found.undecided) == (20480, 16384, 4, ())


def test_a_memfd_whose_page_left_it_after_the_device_wrote_is_credited_for_the_others_only():
    # A hole punched at page 0 after the load: the probe forgot that place (its bytes went back to their frame),
    # whatever frame fills it now.
    places = {place: written for place, written in MOVED.places.items() if place[2] != 0}
    left = DeviceWrites({9: 4096, 100: 4096}, stats=MOVED.stats, places=places, written_files={(7, 40): 1})
    found = evidence.judge(left, [], (), [_memfd(FRAMES_NOW)])
    assert (found.device_to_buffer, found.undecided) == (12288, ())


def test_a_memfd_that_lost_pages_the_probe_could_not_count_leaves_the_evidence_undecided():
    # Its frames now cannot stand in: a page a copy filled often takes the very frame the device wrote.
    lost = DeviceWrites(MOVED.pages, stats=MOVED.stats, places=MOVED.places, written_files={(7, 40): PLACES_UNKNOWN})
    found = evidence.judge(lost, [], (), [_memfd([100, 101, 102, 103])])
    assert found.device_to_buffer == 0 and "which ones is not known" in found.undecided[0]


def test_a_memfd_is_matched_by_its_frames_where_the_probe_names_no_places():
    unnamed = DeviceWrites({100: 4096, 101: 4096, 102: 4096, 103: 4096, 9: 4096}, stats=Stats(file_places=0))
    assert evidence.judge(unnamed, [], (), [_memfd()]).device_to_buffer == 8192


def test_a_page_that_is_a_udmabufs_and_its_memfds_counts_once():
    # The udmabuf pins the memfd's pages (named by place, as the exporter walk reads them); the command held both.
    # Counted twice, the payload (the buffer's size) would double and half of it read as copied (the guest test
    # failed so).
    udmabuf = [(7, 40, index) for index in range(4)]
    found = evidence.judge(MOVED, udmabuf, (), [_memfd([100, 101, 102, 103])])
    assert (found.device_to_buffer, found.buffer_pages) == (16384, 4)
    assert evidence.judge(MOVED, udmabuf).device_to_buffer == 16384  # the udmabuf alone: by its places too


def test_a_udmabuf_and_its_memfd_count_once_in_a_window_without_a_read_completion():
    # No completion ran the walk (the stats say no places), but the udmabuf's pages named by place say this kernel
    # names places: the memfd is taken by place too, not by its frames, and its pages count once.
    nothing = DeviceWrites({}, stats=Stats(file_places=0))
    found = evidence.judge(nothing, [(7, 40, index) for index in range(4)], (), [_memfd([100, 101, 102, 103])])
    assert (found.device_to_buffer, found.buffer_pages) == (0, 4)


def test_a_udmabuf_in_frames_another_files_moved_pages_left_gets_no_credit():
    # Built to fool a match by frame: the device wrote file (7, 40) in frames 100-103; the kernel moved those pages
    # (a collapse), and a udmabuf over memfd (7, 41), filled by a copy, got the frames. Its pages are named by place.
    found = evidence.judge(MOVED, [(7, 41, index) for index in range(4)], (), [evidence.Memfd(FilePages(7, 41, 4),
                                                                                             lambda: [100, 101])])
    assert (found.device_to_buffer, found.buffer_pages, found.undecided) == (0, 4, ())


def test_a_udmabufs_places_are_doubted_as_its_memfds_are():
    # Pages left the memfd under the udmabuf (which ones not known): its places cannot decide, held memfd or not.
    lost = DeviceWrites(MOVED.pages, stats=MOVED.stats, places=MOVED.places, written_files={(7, 40): PLACES_UNKNOWN})
    found = evidence.judge(lost, [(7, 40, index) for index in range(4)])
    assert found.device_to_buffer == 0 and "which ones is not known" in found.undecided[0]


def test_a_udmabuf_page_named_neither_way_leaves_the_evidence_undecided():
    # Its folio's head was not found: the completion walk could not have named a device write into it either.
    found = evidence.judge(MOVED, [(7, 40, 0), (7, 40, 1), None])
    assert found.device_to_buffer == 8192 and found.undecided == ("1 pages of the buffer had no known page frame or "
                                                                  "place",)


def test_a_memfd_that_lost_a_page_after_the_drain_leaves_the_evidence_undecided():
    # Its place was read at the drain, credit and all; a punch after that (a child still running) went unseen there.
    found = evidence.judge(MOVED, [], (), [_memfd()], evidence.Since({(7, 40): 1}, 0))
    assert found.device_to_buffer == 0 and "after the load" in found.undecided[0]
    assert evidence.judge(MOVED, [], (), [_memfd()], evidence.Since({(7, 40): 0}, 0)).undecided == ()


def test_a_removal_the_probe_cannot_place_leaves_every_memfd_undecided():
    # truncate(2) by path, madvise(MADV_REMOVE), io_uring's fallocate: which file lost pages is not known.
    found = evidence.judge(MOVED, [], (), [_memfd()], evidence.Since({(7, 40): 0}, 1))
    assert found.device_to_buffer == 0 and "truncate(2)" in found.undecided[0]


def test_only_the_places_inside_the_memfd_count():
    beyond = DeviceWrites({}, stats=Stats(file_places=1),
                          places={(7, 40, 0): (4096, 100), (7, 40, 4): (4096, 200), (8, 40, 1): (4096, 300)},
                          written_files={(7, 40): 0, (8, 40): 0})
    assert evidence.judge(beyond, [], (), [_memfd()]).device_to_buffer == 4096


def test_tmpfs_has_no_block_device_under_it(tmp_path):
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if shm:
        assert "no block device" in evidence.block_device_missing(shm)
    assert evidence.block_device_missing("/proc/self/status") is not None  # procfs: an anonymous device


def test_pages_of_the_buffer_without_a_frame_leave_the_evidence_undecided():
    found = evidence.judge(DeviceWrites({1: 4096}), [1, None])
    assert found.device_to_buffer == 4096 and found.undecided == ("1 pages of the buffer had no known page frame or "
                                                                  "place",)


def test_runs_the_kernel_skipped_cut_the_window():
    # A completion nested in another's on one CPU is never shown to the probe: its bytes are unknown, not zero.
    why = evidence.lost(Stats(skipped_runs=2), Stats(skipped_runs=5))
    assert why and "3 runs of its programs" in why
    assert evidence.lost(Stats(skipped_runs=4), Stats(skipped_runs=4)) is None
    assert "does not count" in evidence.lost(Stats(), Stats(skipped_runs=None))


class _Drained:
    def __init__(self, stats):
        self.stats, self.pages = stats, {}


class _FakeProbe:
    """The block-layer probe without a kernel: 2 skipped runs when the window starts, 5 when it stops."""

    def __init__(self, tgids, max_pages):
        self.drains = [Stats(skipped_runs=2), Stats(skipped_runs=5)]

    def drain(self):
        return _Drained(self.drains.pop(0))

    def forget_files(self):
        pass

    def stats(self):
        return Stats(skipped_runs=2)


def test_the_window_counts_its_skipped_runs_as_its_losses_do(monkeypatch):
    # One delta for both: the number validate keeps (evidence_skips) and the sentence that cuts the window.
    monkeypatch.setattr(evidence, "DmaEvidence", _FakeProbe)
    window = evidence.Window(tgids=[1])
    window.start()
    _, why = window.stop()
    assert window.skipped_runs == 3 and "3 runs of its programs" in why
    assert evidence.skipped_runs(Stats(), Stats(skipped_runs=None)) is None


def test_a_page_the_device_wrote_twice_covers_one_page_of_the_payload():
    """Two O_DIRECT reads into the buffer's first half, then a copy into its second: the device wrote the
    buffer's size in bytes, but into half its pages. The credit is the pages covered, not the bytes written, so
    the conservation rule sees the copied half (a false "zero-copy" before)."""
    by_frame = evidence.judge(DeviceWrites({1: 8192, 2: 8192}), [1, 2, 3, 4])
    assert (by_frame.device_bytes, by_frame.device_to_buffer) == (16384, 8192)
    twice = DeviceWrites({}, stats=Stats(file_places=1), places={(7, 40, 0): (8192, 100), (7, 40, 1): (8192, 101)},
                         written_files={(7, 40): 0})
    by_place = evidence.judge(twice, [], (), [_memfd()])
    assert by_place.device_to_buffer == 8192
    judged = verdict.verdict(verdict.Measurement(
        payload=16384, moved=16384, reached=16384, cpu_copied=0, page_cache_pages=0, pinned_pages=0,
        device_bytes=by_frame.device_bytes, device_to_buffer=by_frame.device_to_buffer))
    assert judged.kind == verdict.COPIES


@pytest.mark.parametrize("read, why", [(None, "cannot be read"), ([11, 12], "only 2 of the 4 pages")])
def test_a_held_dma_buf_whose_pages_cannot_be_read_whole_leaves_the_evidence_undecided(monkeypatch, tmp_path, read,
                                                                                          why):
    """A command that DMAs into a memfd and copies into a dma-buf of an exporter the walk does not know (a GPU's):
    judged on the memfd alone it looked zero-copy. The lab has no such exporter (heaps, CMA and udmabuf are all
    walked), so the walk's answer is given here; the held buffer's size is a file's (st_size is all that is read)."""
    stand_in = tmp_path / "dmabuf"
    stand_in.write_bytes(bytes(4 * 4096))
    fd = os.open(stand_in, os.O_RDONLY)
    try:
        monkeypatch.setattr(evidence, "buffer_pages",
                            lambda inode, max_pages: None if read is None else BufferPages(read, read))
        buffers = evidence.CommandBuffers(root=os.getpid(), held={77: ("dmabuf", fd)})
        keys, memfds, unknown = buffers.pages(MOVED)
    finally:
        os.close(fd)
    assert len(unknown) == 1 and why in unknown[0] and "77" in unknown[0]
    found = evidence.judge(MOVED, keys, unknown, [_memfd()])
    assert found.undecided == tuple(unknown)


def test_a_hugetlbfs_memfd_is_told_by_its_filesystem():
    """The probe names a hugetlbfs page by frame (dma_evidence.bpf.c): memfd_of must know such a memfd."""
    plain = os.memfd_create("evidence-plain")
    try:
        assert not evidence.memfd_of(plain).by_frame
    finally:
        os.close(plain)
    try:
        huge = os.memfd_create("evidence-huge", os.MFD_HUGETLB)
    except OSError as error:
        pytest.skip(f"no hugetlbfs here: {error}")
    try:
        assert evidence.memfd_of(huge).by_frame
    finally:
        os.close(huge)


def test_a_hugetlbfs_memfd_and_a_udmabuf_over_it_are_matched_by_frame_and_count_once():
    """The device wrote the memfd's four pages by frame (1-4): credited, and its udmabuf's pages (the same frames)
    do not count the buffer twice (which read as half the payload copied)."""
    writes = DeviceWrites({frame: 4096 for frame in (1, 2, 3, 4)}, stats=Stats(file_places=1))
    huge = evidence.Memfd(FilePages(7, 50, 4), lambda: [1, 2, 3, 4], by_frame=True)
    alone = evidence.judge(writes, [], (), [huge])
    assert (alone.device_to_buffer, alone.buffer_pages, alone.undecided) == (16384, 4, ())
    with_udmabuf = evidence.judge(writes, [1, 2, 3, 4], (), [huge])
    assert (with_udmabuf.device_to_buffer, with_udmabuf.buffer_pages) == (16384, 4)
