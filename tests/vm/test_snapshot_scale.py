"""The snapshot's array join on real buffers at scale, under the lab's emulated CPU.

The join sorts: a sort that is wrong only past a few hundred elements, or only on
this CPU (numpy's default argsort is, in this TCG guest), passes every small test.
Here 600 buffers of two sizes are held by this process and two forked children
(each keeping, closing and mapping a known part), and the snapshot, both from
IteratorSnapshots and from `snapshot --json`, is checked against the numbers the
test built and against a plain-Python oracle over the same kernel records.
"""
import ctypes
import json
import os
import resource
import subprocess
import sys

import pytest

from dmabuf_top.alloc import alloc_heap
from dmabuf_top.inventory.collect import IteratorSnapshots
from dmabuf_top.probes.dmabuf_iter import read_buffers
from dmabuf_top.probes.task_dmabufs import read_holders
from inventory_oracle import expected_numbers, numbers_of

pytestmark = pytest.mark.guest

COUNT = 600
PAGE = os.sysconf("SC_PAGE_SIZE")
MAPPED_BY_SECOND = 300  # the second child maps buffers [0, 300)...
CLOSED_BY_SECOND = 100  # ...and closes the fds of [0, 100) after mapping them

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]


def expected_refs(index):
    """{who: (fds, maps)} for buffer `index`: "me" holds every fd, "first" the even ones, "second" the rest."""
    refs = {"me": (1, 0)}
    if index % 2 == 0:
        refs["first"] = (1, 0)
    refs["second"] = (0 if index < CLOSED_BY_SECOND else 1, 1 if index < MAPPED_BY_SECOND else 0)
    return refs


def hold(fds, role, pipes):
    (ready_read, ready), (release, release_write) = pipes
    try:
        os.close(ready_read)
        os.close(release_write)  # or the parent's close would never reach us as end-of-file
        for index, fd in enumerate(fds):
            if role == "first" and index % 2:
                os.close(fd)
            if role == "second" and index < MAPPED_BY_SECOND:
                if _libc.mmap(None, PAGE, 3, 1, fd, 0) in (None, ctypes.c_void_p(-1).value):
                    os._exit(1)
                if index < CLOSED_BY_SECOND:
                    os.close(fd)
        os.write(ready, b"r")
        os.read(release, 1)
    finally:
        os._exit(0)


@pytest.fixture(scope="module")
def many(request):
    if not os.path.exists("/dev/dma_heap/system"):
        pytest.skip("not inside the lab guest (no system heap)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, COUNT + 256), max(hard, COUNT + 256)))
    buffers = [alloc_heap(PAGE * (1 + index % 2)) for index in range(COUNT)]
    ready_read, ready_write = os.pipe()
    release_read, release_write = os.pipe()
    pids = {}
    try:
        for role in ("first", "second"):
            pid = os.fork()
            if pid == 0:
                pipes = ((ready_read, ready_write), (release_read, release_write))
                hold([buffer.fd for buffer in buffers], role, pipes)
            pids[role] = pid
        for _ in pids:
            assert os.read(ready_read, 1) == b"r", "a child failed to map its buffers"
        pids["me"] = os.getpid()
        yield buffers, pids
    finally:
        os.close(release_write)
        for pid in pids.values():
            if pid != os.getpid():
                os.waitpid(pid, 0)
        for fd in (ready_read, ready_write, release_read):
            os.close(fd)
        for buffer in buffers:
            buffer.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def oracle_now():
    """Every number, by the plain oracle over what the object decoders read from the kernel now."""
    objects, holders = read_buffers(), read_holders()
    return expected_numbers(objects, [(ref.pid, ref.inode) for ref in holders.fds],
                            [(ref.pid, ref.inode) for ref in holders.maps])


def test_every_number_at_scale_from_the_loaded_iterators(many):
    buffers, pids = many
    with IteratorSnapshots() as snapshots:
        inventory = snapshots.take()
    ours = {buffer.inode: index for index, buffer in enumerate(buffers)}
    for entry in inventory.buffers:
        if entry.inode in ours:
            index = ours[entry.inode]
            assert entry.size == buffers[index].size
            assert entry.holders == {pids[who]: refs for who, refs in expected_refs(index).items()}
    for who, pid in pids.items():
        held = {buffer.inode: expected_refs(index)[who] for index, buffer in enumerate(buffers)
                if who in expected_refs(index)}
        process = inventory.process(pid)
        # This process may still hold buffers of other tests: compare ours only.
        assert {inode: tuple(refs) for inode, refs in process.buffers.items() if inode in ours} == held
        if who != "me":
            assert process.rss == sum(buffers[ours[inode]].size for inode in held)
            assert process.pss == sum(buffers[ours[inode]].size // len(expected_refs(ours[inode])) for inode in held)

    # Everything else in the guest too, against the oracle over the object decoders' view.
    oracle = oracle_now()
    assert numbers_of(inventory) == oracle


def test_snapshot_json_at_scale(many):
    buffers, pids = many
    result = subprocess.run([sys.executable, "-m", "dmabuf_top", "snapshot", "--json"], capture_output=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    doc = json.loads(result.stdout)
    oracle = oracle_now()
    assert [entry["inode"] for entry in doc["buffers"]] == oracle["order"]
    assert {entry["inode"]: {h["pid"]: (h["fds"], h["maps"]) for h in entry["holders"]}
            for entry in doc["buffers"] if entry["holders"]} == oracle["holders"]
    for process in doc["processes"]:
        expected = oracle["processes"][process["pid"]]
        assert (process["rss"], process["pss"], process["fd_refs"], process["map_refs"]) == (
            expected["rss"], expected["pss"], expected["fd_refs"], expected["map_refs"])
    totals = doc["totals"]
    assert (totals["buffers"], totals["bytes"], totals["kernel_only_buffers"], totals["kernel_only_bytes"],
            totals["userspace_rss"], totals["userspace_pss"]) == oracle["totals"]
