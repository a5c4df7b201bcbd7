"""validate's verdicts: pure functions of what the kernel counted, and honest about what it could not."""
import errno

import pytest

from dmabuf_top.validate.verdict import Flow, Measurement, absent, parse_expectation, unmeasured_copy_sites, verdict

MiB = 1 << 20
SIZE = 64 * MiB
PAGES = SIZE // 4096


def measure(**overrides):
    values = dict(payload=SIZE, moved=SIZE, reached=SIZE, cpu_copied=0, page_cache_pages=0, pinned_pages=PAGES,
                  calls=2, checksum_ok=True)
    values.update(overrides)
    return Measurement(**values)


def test_device_writes_into_the_buffer_covering_the_payload_are_zero_copy():
    result = verdict(measure(device_bytes=SIZE, device_to_buffer=SIZE))
    assert (result.kind, result.label, result.copies) == ("zero-copy", "zero-copy", 0.0)
    assert "16384 pages pinned" in result.reasons[0]
    assert "64.0 MiB into the buffer's own pages" in result.reasons[0]


def test_no_copy_no_page_cache_without_dma_evidence_is_not_zero_copy():
    # Was "zero-copy" before issue 15: the absence of a seen copy was taken as proof. It is not: a copy made
    # where no hook sees leaves the same trace.
    result = verdict(measure())
    assert (result.kind, result.label) == ("unmeasured", "unmeasured (0 copies seen)")
    assert any("no DMA evidence" in reason for reason in result.reasons)


# -- built to fool the verdict: no hook saw a copy, no page cache, pages pinned, checksum fine


def test_a_kernel_copy_no_hook_sees_is_a_copy_never_zero_copy():
    # A "direct" path where the device writes the exporter's own pages and memcpy moves them into the buffer.
    result = verdict(measure(device_bytes=SIZE, device_to_buffer=0))
    assert result.kind == "copies" and result.copies == 1.0
    assert result.label == "1 copy, no page cache, 64.0 MiB unseen"
    assert "device wrote 64.0 MiB into pages that are not the buffer's: copied where no hook sees" in result.reasons
    assert "the hooks saw 0 bytes copied by the CPU (0 copies seen)" in result.reasons


def test_direct_read_into_anonymous_memory_then_memcpy_is_a_copy():
    result = verdict(measure(pinned_pages=PAGES, device_bytes=SIZE, device_to_buffer=0))
    assert result.kind == "copies" and "unseen" in result.label
    assert parse_expectation("zero-copy").holds(result)[0] is False
    assert parse_expectation("copies=1").holds(result)[0] is True


def test_a_copy_from_a_file_mapping_says_so():
    result = verdict(measure(device_bytes=SIZE, device_to_buffer=0, from_file_mapping=True, reached=0))
    assert result.kind == "copies" and result.label == "1 copy, via page cache, 64.0 MiB unseen"
    assert "the buffer's bytes came from a file mapping: a user-space copy" in result.reasons


def test_a_partly_covered_payload_counts_the_uncovered_bytes_as_copied():
    result = verdict(measure(device_bytes=SIZE, device_to_buffer=SIZE - MiB))
    assert result.kind == "copies" and result.label == "0.02 copies, no page cache, 1.0 MiB unseen"


def test_bytes_the_device_never_wrote_for_this_load_were_copied():
    # Warm page cache: the device wrote nothing, yet the buffer holds the payload.
    result = verdict(measure(device_bytes=0, device_to_buffer=0))
    assert result.kind == "copies" and any("without the device writing them" in reason for reason in result.reasons)


def test_seen_copies_account_for_the_uncovered_bytes():
    buffered = verdict(measure(cpu_copied=SIZE, page_cache_pages=PAGES, device_bytes=SIZE, device_to_buffer=0))
    assert (buffered.kind, buffered.label, buffered.copies) == ("copies", "1 copy, via page cache", 1.0)
    bounce = verdict(measure(cpu_copied=2 * SIZE, page_cache_pages=PAGES, device_bytes=SIZE, device_to_buffer=0))
    assert (bounce.label, bounce.copies) == ("2 copies, via page cache", 2.0)


def test_dma_into_the_buffer_with_a_copy_seen_is_not_zero_copy():
    result = verdict(measure(cpu_copied=SIZE, device_bytes=SIZE, device_to_buffer=SIZE))
    assert result.kind == "copies" and result.copies == 1.0


def test_unhooked_copy_sites_no_longer_leave_a_covered_question_open():
    result = verdict(measure(device_bytes=SIZE, device_to_buffer=0,
                             unmeasured=("sendfile into a dma-buf went through the exporter's own callback",)))
    assert result.kind == "copies" and any("exporter's own callback" in reason for reason in result.reasons)


def test_when_the_evidence_cannot_decide_the_verdict_is_unmeasured_and_says_why():
    result = verdict(measure(device_bytes=0, device_to_buffer=0, undecided=("no block device under tmpfs",)))
    assert result.kind == "unmeasured"
    assert "no DMA evidence: no block device under tmpfs" in result.reasons
    lost = verdict(measure(device_bytes=SIZE, device_to_buffer=SIZE,
                           undecided=("the evidence lost 4096 bytes (map full)",)))
    assert lost.kind == "unmeasured" and "lost 4096 bytes" in lost.reasons[-1]


def test_wrong_data_wins_over_dma_evidence():
    result = verdict(measure(checksum_ok=False, device_bytes=SIZE, device_to_buffer=SIZE))
    assert result.kind == "wrong-data"


def test_one_copy_through_the_page_cache():
    result = verdict(measure(cpu_copied=SIZE, page_cache_pages=PAGES, pinned_pages=0))
    assert (result.kind, result.label, result.copies) == ("copies", "1 copy, via page cache", 1.0)


def test_two_copies_and_copies_without_page_cache():
    assert verdict(measure(cpu_copied=2 * SIZE, page_cache_pages=PAGES)).label == "2 copies, via page cache"
    assert verdict(measure(cpu_copied=SIZE)).label == "1 copy, no page cache"


def test_a_partial_copy_is_never_rounded_down_to_zero_copy():
    result = verdict(measure(cpu_copied=SIZE // 10))
    assert result.kind == "copies" and result.label.startswith("0.10 copies")


def test_page_cache_without_a_copy_is_not_zero_copy():
    result = verdict(measure(page_cache_pages=10))
    assert result.kind == "copies" and result.label == "0 copies, via page cache"


def test_failure_wins_and_names_the_errno():
    result = verdict(measure(errno=errno.EFAULT, moved=0, reached=0, checksum_ok=None))
    assert (result.kind, result.label) == ("failed", "failed (EFAULT)")


def test_a_wrong_buffer_is_wrong_data_however_fast_or_zero_copy():
    result = verdict(measure(checksum_ok=False))
    assert result.kind == "wrong-data" and "checksum" in result.label


def test_a_method_that_moved_less_than_the_file_is_incomplete():
    result = verdict(measure(moved=SIZE - 4096))
    assert result.kind == "incomplete" and str(SIZE - 4096) in result.label


@pytest.mark.parametrize("concern", ["cpu_copy", "gup", "page_cache"])
def test_zero_copy_needs_the_copy_gup_and_page_cache_hooks_live(concern):
    result = verdict(measure(missing={concern: "fentry refused (EPERM)"}))
    assert result.kind == "unmeasured"
    assert any("EPERM" in reason for reason in result.reasons)


def test_copies_seen_while_the_page_cache_is_not_traced_say_so():
    result = verdict(measure(cpu_copied=SIZE, missing={"page_cache": "tracepoint absent"}))
    assert result.label == "1 copy, page cache not traced"


def test_an_unmeasured_copy_site_makes_the_verdict_unmeasured_even_with_zero_copies_seen():
    result = verdict(measure(unmeasured=("read() from a memfd/tmpfs copies in shmem_file_read_iter",)))
    assert result.kind == "unmeasured" and result.copies is None
    assert "shmem_file_read_iter" in result.reasons[0]
    seen = verdict(measure(cpu_copied=SIZE, unmeasured=("x",)))
    assert seen.label == "unmeasured, >= 1 copy seen"


def test_bytes_the_kernel_did_not_see_reach_the_buffer_are_unmeasured():
    result = verdict(measure(reached=SIZE // 2))
    assert result.kind == "unmeasured" and "saw 33554432 of 67108864" in result.reasons[0]


def test_absent_methods():
    assert absent("needs a patched kernel").label == "absent on this kernel"


# -- where copies cannot be seen


def flow(path, src_kind, dst_kind, src_fs="ext4", dst_fs="tmpfs", size=SIZE):
    return Flow(path, src_kind, dst_kind, src_fs, dst_fs, size)


@pytest.mark.parametrize("flows", [
    [flow("read", "file", "dmabuf", dst_fs="dmabuf")],  # filemap_read on ext4
    [flow("read", "file", "none", dst_fs="-"), flow("write", "none", "shmem", src_fs="-")],  # bounce into a memfd
    [flow("sendfile", "file", "shmem")],
    [flow("splice", "file", "pipe", dst_fs="pipefs"), flow("splice", "pipe", "shmem", src_fs="pipefs")],
    [flow("read", "file", "shmem", src_fs="xfs")],
    [flow("read", "shmem", "none", size=0)],  # a call that moved nothing copies nothing
    [flow("rw_file", "file", "dmabuf", dst_fs="dmabuf")],  # patched kernels: filemap_read or device DMA
])
def test_paths_whose_copies_are_all_hooked(flows):
    assert unmeasured_copy_sites(flows) == ()


@pytest.mark.parametrize("flows, words", [
    ([flow("read", "shmem", "dmabuf", src_fs="tmpfs")], "shmem_file_read_iter"),
    ([flow("read", "pipe", "shmem", src_fs="pipefs")], "outside filemap_read"),
    ([flow("read", "file", "dmabuf", src_fs="virtiofs/fuse")], "virtiofs/fuse"),
    ([flow("write", "none", "pipe", dst_fs="pipefs")], "outside generic_perform_write"),
    ([flow("write", "none", "file", dst_fs="xfs")], "on xfs"),
    ([flow("copy_file_range", "file", "dmabuf", dst_fs="dmabuf")], "exporter's own callback"),
    ([flow("sendfile", "socket", "shmem", src_fs="sockfs")], "splice read is not hooked"),
    ([flow("rw_file", "file", "dmabuf", src_fs="f2fs", dst_fs="dmabuf")], "rw_file from a file on f2fs"),
])
def test_paths_with_copies_no_hook_sees(flows, words):
    sites = unmeasured_copy_sites(flows)
    assert len(sites) == 1 and words in sites[0]
