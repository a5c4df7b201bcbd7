"""The tracer and doctor on the patched kernel: dma_buf_rw_file found by symbol, its bytes attributed to the
rw_file path and the dma-buf, and its costs what the kernel's code makes them (numbers exact)."""
import json
import os
import subprocess
import sys

import pytest

from dmabuf_top import alloc
from dmabuf_top.probes.iopaths import Counters
from dmabuf_top.probes.tracer import Tracer
from dmabuf_top.validate.methods import RW_FILE_DIRECT, RW_FILE_READ, RW_FILE_WRITE
from dmabuf_top.validate.runner import drop_page_cache

from rw_file_request import PAGE, SCRATCH, rw_file, scratch_file

pytestmark = pytest.mark.guest

SIZE = 8 << 20
PAGES = SIZE // PAGE


@pytest.fixture(scope="module")
def source():
    with scratch_file("rw-file-traced.bin", SIZE) as (path, _):
        yield path


@pytest.fixture(scope="module")
def tracer():
    with Tracer(pid=os.getpid(), ignore_self=False, stacks=True) as live:
        yield live


def traced(tracer, call):
    """(rw_file Counters, {target: Counters}, [outcome keys]) of what `call` did."""
    before = tracer.snapshot()
    call()
    after = tracer.snapshot()
    per_path = {path: c - before.per_path(os.getpid()).get(path, Counters())
                for path, c in after.per_path(os.getpid()).items()}
    targets = {t: c - before.by_target.get(t, Counters()) for t, c in after.by_target.items()
               if t.path == "rw_file" and (c - before.by_target.get(t, Counters())).calls}
    outcomes = [o for o, v in after.outcomes.items()
                if o.path == "rw_file" and v["calls"] != before.outcomes.get(o, {"calls": 0})["calls"]]
    return per_path.get("rw_file", Counters()), targets, outcomes


def test_the_rw_file_hooks_are_live_by_fentry(tracer):
    hooks = {hook.program: hook for hook in tracer.hooks}
    for program in ("rw_file_enter", "rw_file_exit"):
        assert hooks[program].live and hooks[program].via == "fentry", hooks[program]
    assert "rw_file" not in tracer.snapshot().missing_concerns()


def test_buffered_rw_file_copies_once_through_the_page_cache(tracer, source):
    fd = os.open(source, os.O_RDONLY)
    try:
        with alloc.alloc_heap(SIZE) as dmabuf:
            drop_page_cache(source)
            counters, targets, outcomes = traced(tracer, lambda: rw_file(dmabuf.fd, fd, RW_FILE_READ, 0, 0, SIZE))
            inode = dmabuf.inode
    finally:
        os.close(fd)
    # ext4_file_read_iter -> generic_file_read_iter -> filemap_read: readahead puts every page of the file in the
    # page cache, copy_folio_to_iter copies each into the bvec pages.
    assert (counters.calls, counters.errors, counters.bytes, counters.requested) == (1, 0, SIZE, SIZE)
    assert counters.cpu_copied == SIZE
    assert counters.pc_added == PAGES
    assert counters.pinned_pages == counters.got_pages == 0
    [(target, by_target)] = targets.items()
    assert (target.kind, target.inode, target.direct, by_target.bytes) == ("dmabuf", inode, False, SIZE)
    assert [(o.src_kind, o.dst_kind, o.src_fs, o.error) for o in outcomes] == [("file", "dmabuf", "ext4", 0)]


@pytest.mark.parametrize("how", ["flag", "o_direct"])
def test_direct_rw_file_is_dma_only(tracer, source, how):
    fd = os.open(source, os.O_RDONLY | (os.O_DIRECT if how == "o_direct" else 0))
    flags = RW_FILE_READ | (RW_FILE_DIRECT if how == "flag" else 0)
    try:
        with alloc.alloc_heap(SIZE) as dmabuf:
            drop_page_cache(source)
            counters, targets, _ = traced(tracer, lambda: rw_file(dmabuf.fd, fd, flags, 0, 0, SIZE))
    finally:
        os.close(fd)
    # ext4_dio_read_iter -> iomap_dio_rw: bio_iov_iter_get_pages takes the bvec pages as they are (no GUP, they
    # are kernel pages), the NVMe DMAs into them: no CPU copy, no page cache, nothing pinned.
    assert (counters.calls, counters.bytes) == (1, SIZE)
    assert (counters.cpu_copied, counters.pc_added, counters.pinned_pages, counters.got_pages) == (0, 0, 0, 0)
    assert [t.direct for t in targets] == [True]


def test_writing_a_buffer_out_is_attributed_to_the_buffer_as_source(tracer, source):
    out_path = os.path.join(SCRATCH, "rw-file-traced-out.bin")
    out = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with alloc.alloc_heap(SIZE) as dmabuf:
            counters, targets, outcomes = traced(tracer, lambda: rw_file(dmabuf.fd, out, RW_FILE_WRITE, 0, 0, SIZE))
            inode = dmabuf.inode
    finally:
        os.close(out)
        os.unlink(out_path)
    # ext4_buffered_write_iter -> generic_perform_write copies the pages into the page cache.
    assert (counters.bytes, counters.cpu_copied, counters.pc_added) == (SIZE, SIZE, PAGES)
    assert [t.inode for t in targets] == [inode]
    assert [(o.src_kind, o.dst_kind, o.dst_fs) for o in outcomes] == [("dmabuf", "file", "ext4")]


def test_doctor_finds_the_patched_functions():
    out = subprocess.run([sys.executable, "-m", "dmabuf_top", "doctor", "--json"], capture_output=True, text=True,
                         check=True).stdout
    features = json.loads(out)["features"]
    for function in ("dma_buf_rw_file", "system_heap_rw_file", "udmabuf_rw_file"):
        assert features[f"fn/{function}"]["available"] and features[f"fn/{function}"]["via"] == "fentry", function
