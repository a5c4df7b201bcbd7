"""validate's arm64 matrix in the emulated arm64 guest, on an 8 MiB file on ext4/NVMe, page cache dropped before
each method: the verdicts the issue names (heap-read one copy, udmabuf-read-direct zero-copy), the CMA heap's
methods, and a CMA load built to fool the hooks. Each expectation names the 7.2 code path that makes it so; the
DMA evidence (block layer -> page frames) runs on arm64's own page arithmetic (VMEMMAP_START from
CONFIG_ARM64_VA_BITS, memstart_addr) and reads a CMA buffer's frames from the heap's own record."""
import os

import pytest

from dmabuf_top.validate import render, runner

pytestmark = pytest.mark.guest

SCRATCH = "/mnt/scratch"
SIZE = 8 << 20  # TCG emulating arm64 is slow; 8 MiB is still 2048 pages, every one placed by the evidence
PAGES = SIZE // 4096
METHODS = ("heap-read", "udmabuf-read-direct", "cma-read", "cma-read-direct", "cma-bounce-memcpy-direct")


@pytest.fixture(scope="module")
def matrix(heaps):
    if not os.path.ismount(SCRATCH):
        pytest.fail(f"{SCRATCH} is not mounted: this suite runs inside `dmabuf-top vm --arch arm64`")
    run = runner.run_matrix(SCRATCH, SIZE, names=list(METHODS))
    table = render.render_table(run)
    print(table)
    results = {result.name: result for result in run.results}
    results["table"] = table
    return results


def loaded(result, reached=SIZE):
    """The payload arrived whole and right, its page cache was cold, and every completion was seen; the traced
    calls moved `reached` bytes into the buffer itself."""
    assert result.checksum == "ok" and result.moved == SIZE and result.reached == reached, result.to_dict()
    assert result.cached_at_start == 0 and result.evidence_skips == 0, result.notes
    assert result.device_bytes >= SIZE, result.to_dict()


def one_copy_through_the_page_cache(result):
    """Loaded whole; the device wrote the page cache, the CPU copied every byte from it into the buffer."""
    loaded(result)
    assert (result.verdict.kind, result.verdict.copies) == ("copies", 1.0), result.verdict
    assert result.verdict.label.startswith("1 copy"), result.verdict.label
    assert result.cpu_copied == SIZE and result.page_cache_pages == PAGES and result.device_to_buffer == 0


def test_a_read_into_a_system_heap_buffer_is_one_copy(matrix):
    # read() -> filemap_read: readahead fills the page cache, copy_folio_to_iter copies into the heap mapping.
    one_copy_through_the_page_cache(matrix["heap-read"])


def test_a_direct_read_into_a_udmabuf_is_zero_copy_by_dma_evidence(matrix):
    # O_DIRECT: iomap_dio_rw pins the memfd's shmem pages (FOLL_PIN), the NVMe DMAs into them; the evidence
    # places every device byte in the buffer's own frames (pagemap), on arm64's page arithmetic.
    result = matrix["udmabuf-read-direct"]
    loaded(result)
    assert result.verdict.kind == "zero-copy", (result.verdict, result.to_dict())
    assert result.cpu_copied == 0 and result.page_cache_pages == 0 and result.pinned_pages == PAGES
    assert result.device_to_buffer == SIZE


def test_a_read_into_a_cma_buffer_is_one_copy(matrix):
    # The CMA heap's mmap inserts each page at its first fault (cma_heap_vm_fault -> vmf_insert_pfn), so
    # filemap_read's copy_to_user faults them in and copies: one CPU copy, the device wrote the page cache.
    result = matrix["cma-read"]
    one_copy_through_the_page_cache(result)
    assert result.pinned_pages == 0


def test_a_direct_read_into_a_cma_buffer_fails_with_efault(matrix):
    # O_DIRECT pins user pages: pin_user_pages_fast -> check_vma_flags refuses the VM_IO | VM_PFNMAP vma that
    # cma_heap_mmap made -> -EFAULT before any byte moves.
    result = matrix["cma-read-direct"]
    assert result.verdict.kind == "failed" and result.to_dict()["errno_name"] == "EFAULT", result.to_dict()
    assert result.reached == 0 and result.checksum is None
    assert "failed (EFAULT)" in next(line for line in matrix["table"].splitlines() if "cma-read-direct" in line)


def test_a_cma_load_whose_copy_no_hook_sees_is_not_zero_copy(matrix):
    """Built to fool: O_DIRECT into anonymous memory (pinned, DMA, no page cache, no kernel copy), then a memcpy
    into the CMA mapping in user space. Every hook sees a zero-copy load; the device wrote the bounce's frames,
    not the CMA buffer's one contiguous run (read from the heap's cma_heap_buffer), so it is one copy."""
    result = matrix["cma-bounce-memcpy-direct"]
    loaded(result, reached=0)  # the traced read() went into the bounce, never into the buffer
    assert result.cpu_copied == 0 and result.page_cache_pages == 0 and result.pinned_pages == PAGES
    assert result.verdict.kind == "copies" and result.verdict.copies == 1.0, result.verdict
    assert result.device_to_buffer == 0
    reasons = " ".join(result.verdict.reasons)
    assert "device wrote" in reasons and "not the buffer's" in reasons, result.verdict.reasons


def test_the_cma_buffer_frames_are_one_contiguous_run(heaps):
    """The evidence's own view of a CMA buffer: iter/dmabuf finds it by its ops (cma_heap_buf_ops), whatever
    its heap is named, and gives consecutive frames, one per page."""
    from dmabuf_top.alloc import alloc_heap, cma_heap_name
    from dmabuf_top.probes.dma_evidence import buffer_frames, cma_heap_ops

    assert cma_heap_ops(), "cma_heap_buf_ops is not in kallsyms"
    with alloc_heap(1 << 20, heap=cma_heap_name(heaps)) as buf:
        frames = buffer_frames(buf.inode, max_pages=256)
    assert frames is not None and len(frames) == 256
    assert frames == list(range(frames[0], frames[0] + 256))
