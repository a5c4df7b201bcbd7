"""validate's page-cache control against this kernel: what is cached is counted, and a drop leaves none."""
import mmap
import os

import pytest

from dmabuf_top.validate import page_cache

SIZE = 2 << 20


@pytest.fixture
def file_on_disk(tmp_path):
    path = tmp_path / "cached.bin"
    path.write_bytes(os.urandom(SIZE))
    os.sync()
    return str(path)


def read_all(path):
    with open(path, "rb") as source:
        while source.read(1 << 20):
            pass


def test_a_file_just_read_is_counted_cached_and_dropping_it_leaves_none(file_on_disk):
    read_all(file_on_disk)
    assert page_cache.cached_bytes(file_on_disk) == SIZE
    assert page_cache.drop_page_cache(file_on_disk) == 0
    assert page_cache.cached_bytes(file_on_disk) == 0


def test_pages_a_mapping_still_holds_are_reported_not_presumed_dropped(file_on_disk):
    # A mapped page survives drop_caches and DONTNEED: the runner must say so instead of calling the cache cold.
    with open(file_on_disk, "rb") as source, mmap.mmap(source.fileno(), SIZE, prot=mmap.PROT_READ) as mapping:
        for offset in range(0, SIZE, mmap.PAGESIZE):
            mapping[offset]
        assert page_cache.drop_page_cache(file_on_disk) == SIZE
    assert page_cache.drop_page_cache(file_on_disk) == 0


def test_mincore_agrees_with_cachestat(file_on_disk):
    read_all(file_on_disk)
    fd = os.open(file_on_disk, os.O_RDONLY)
    try:
        by_cachestat = page_cache._cachestat_pages(fd)
        by_mincore = page_cache._mincore_pages(fd, SIZE)
    finally:
        os.close(fd)
    if by_cachestat is None:
        pytest.skip("this kernel has no cachestat(2)")
    assert by_cachestat == by_mincore == SIZE // page_cache.PAGE_SIZE
