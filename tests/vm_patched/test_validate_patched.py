"""`dmabuf-top validate` on the patched kernel: the rw_file ioctl methods are detected and run next to the
buffered methods, with verdicts and numbers that follow from the patch's code and the checksum right."""
import os
import subprocess
import sys

import pytest
from rw_file_request import SCRATCH

from dmabuf_top.validate import render, runner

pytestmark = pytest.mark.guest

SIZE = 64 << 20
PAGES = SIZE // 4096
ALL = "all"

# name: (verdict kind, CPU copies (x payload), page-cache pages, pinned pages)
EXPECTED = {
    # The stock paths, for comparison (tests/vm/test_validate.py explains them).
    "heap-read": ("copies", 1, ALL, 0),
    "udmabuf-read": ("copies", 1, ALL, 0),
    "udmabuf-read-direct": ("zero-copy", 0, 0, PAGES),
    # dma_buf_rw_file -> system_heap_rw_file: bio_vecs over the sg_table chunks -> vfs_iocb_iter_read ->
    # ext4_file_read_iter -> filemap_read: readahead fills the page cache, one CPU copy into the heap pages.
    "heap-rwfile-ioctl": ("copies", 1, ALL, 0),
    # The same with O_DIRECT: ext4_dio_read_iter -> iomap_dio_rw builds bios from the bio_vecs (kernel pages:
    # no GUP, nothing pinned), the NVMe DMAs into the heap's own pages: no copy, no page cache.
    "heap-rwfile-ioctl-direct": ("zero-copy", 0, 0, 0),
    # udmabuf_rw_file: one bio_vec per page the udmabuf pinned at creation; same two paths.
    "udmabuf-rwfile-ioctl": ("copies", 1, ALL, 0),
    "udmabuf-rwfile-ioctl-direct": ("zero-copy", 0, 0, 0),
}
# The patch serves the ioctl only: copy_file_range into a dma-buf is still refused, found by trial.
ABSENT = ("heap-cfr-rwfile", "heap-cfr-rwfile-direct", "udmabuf-cfr-rwfile", "udmabuf-cfr-rwfile-direct")


@pytest.fixture(scope="module")
def matrix():
    run = runner.run_matrix(SCRATCH, SIZE, names=list(EXPECTED) + list(ABSENT))
    print(render.render_table(run))
    return {result.name: result for result in run.results}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict_and_numbers_follow_the_patch(matrix, name):
    result = matrix[name]
    kind, copies, page_cache, pinned = EXPECTED[name]
    assert result.verdict.kind == kind, (result.verdict, result.to_dict())
    assert result.moved == result.reached == SIZE
    assert result.checksum == "ok"
    assert result.cpu_copied == copies * SIZE
    assert result.page_cache_pages == (PAGES if page_cache == ALL else page_cache)
    assert result.pinned_pages == pinned and result.got_pages == 0
    assert result.errors == 0


def test_ioctl_calls_follow_the_chunking(matrix):
    assert matrix["heap-rwfile-ioctl-direct"].syscalls == SIZE // runner.DEFAULT_CHUNK
    assert set(matrix["heap-rwfile-ioctl-direct"].paths) == {"rw_file"}


def test_copy_file_range_into_a_dma_buf_stays_absent(matrix):
    for name in ABSENT:
        assert matrix[name].verdict.kind == "absent"
        assert "copy_file_range into a dma-buf answers EINVAL" in matrix[name].verdict.reasons[0]


def test_the_command_shows_the_direct_path_as_zero_copy():
    out = subprocess.run([sys.executable, "-m", "dmabuf_top", "validate", "--dir", SCRATCH, "--size", "16M",
                          "--methods", "heap-read,heap-rwfile-ioctl,heap-rwfile-ioctl-direct"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("heap-")}
    assert "zero-copy" in rows["heap-rwfile-ioctl-direct"]
    assert "1 copy" in rows["heap-rwfile-ioctl"] and "1 copy" in rows["heap-read"]
    assert not os.path.exists(os.path.join(SCRATCH, "dmabuf-top-validate.bin"))
