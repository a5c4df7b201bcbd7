"""validate's DMA evidence: the pure parts (the window's losses, the judgement, the block-device check)."""
import os

from dmabuf_top.probes.dma_evidence import Stats
from dmabuf_top.validate import evidence


def test_a_window_without_losses_is_whole():
    assert evidence.lost(Stats(map_full_bytes=5), Stats(map_full_bytes=5)) is None


def test_a_window_that_lost_bytes_says_how_many_and_why():
    why = evidence.lost(Stats(), Stats(map_full_bytes=4096, unplaced_bytes=512))
    assert "4096 bytes (its frame map was full)" in why and "512 bytes (they were in no bio vector)" in why


def test_judge_splits_the_device_writes_by_the_buffers_frames():
    found = evidence.judge({1: 4096, 2: 4096, 9: 4096}, [1, 2, 3])
    assert (found.device_bytes, found.device_to_buffer, found.buffer_pages, found.undecided) == (12288, 8192, 3, ())


def test_judge_without_frames_cannot_decide():
    found = evidence.judge({1: 4096}, None)
    assert found.device_to_buffer is None and found.undecided == ("the buffer's page frames are not known",)


def test_judge_keeps_every_reason_the_evidence_cannot_decide():
    found = evidence.judge({}, [1], (None, "no block device", "lost 4 bytes"))
    assert found.undecided == ("no block device", "lost 4 bytes")


def test_tmpfs_has_no_block_device_under_it(tmp_path):
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    if shm:
        assert "no block device" in evidence.block_device_missing(shm)
    assert evidence.block_device_missing("/proc/self/status") is not None  # procfs: an anonymous device


def test_pages_of_the_buffer_without_a_frame_leave_the_evidence_undecided():
    found = evidence.judge({1: 4096}, [1, None])
    assert found.device_to_buffer == 4096 and found.undecided == ("1 pages of the buffer had no known page frame",)


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

    def stats(self):
        return Stats(skipped_runs=2)


def test_the_window_counts_its_skipped_runs_as_its_losses_do(monkeypatch):
    # One delta for both: the number validate keeps (evidence_skips) and the sentence that cuts the window.
    monkeypatch.setattr(evidence, "DmaEvidence", _FakeProbe)
    window = evidence.Window(tgids=[1])
    window.start()
    pages, why = window.stop()
    assert window.skipped_runs == 3 and "3 runs of its programs" in why
    assert evidence.skipped_runs(Stats(), Stats(skipped_runs=None)) is None
