"""The buffer index (inventory.index): targets -> buffers, alive or gone, from Buffer objects or columns."""
from dmabuf_top.inventory.index import BufferIndex
from dmabuf_top.inventory.types import Buffer
from dmabuf_top.probes.dmabuf_iter import BufferColumns
from dmabuf_top.probes.iopaths import Counters, Target

HEAP = Buffer(inode=11, size=4096, exporter="system", name=None, file_refs=1, attachment_count=0)
UDMABUF = Buffer(inode=12, size=4096, exporter="udmabuf", name=None, file_refs=1, attachment_count=0,
                 backing_inode=500, backing_dev=7)


def test_a_dmabuf_is_its_own_inode_and_a_memfd_is_the_udmabuf_over_it():
    for read in ([HEAP, UDMABUF], BufferColumns.from_buffers([HEAP, UDMABUF])):
        index = BufferIndex()
        index.learn(read)
        assert index.buffer_of("dmabuf", 11, 0) == 11 and index.alive("dmabuf", 11, 0)
        assert index.buffer_of("shmem", 500, 7) == 12 and index.alive("shmem", 500, 7)
        assert index.buffer_of("shmem", 500, 8) == 0  # the same inode number on another filesystem
        assert index.buffer_of("dmabuf", 12, 0) == 12  # a udmabuf mapped directly
        assert index.buffer_of("file", 11, 0) == 0 and not index.alive("file", 11, 0)


def test_per_buffer_sums_paths_and_alive_only_leaves_recently_gone_buffers_out():
    index = BufferIndex()
    index.learn([HEAP, UDMABUF])
    index.learn([UDMABUF])  # HEAP freed: still known (kept reads), no longer alive
    by_target = {Target(11, 0, "read", "dmabuf", False): Counters(calls=1, bytes=10),
                 Target(500, 7, "read", "shmem", False): Counters(calls=1, bytes=20),
                 Target(500, 7, "read", "shmem", True): Counters(calls=1, bytes=5),
                 Target(500, 7, "write", "shmem", False): Counters(calls=1, bytes=1),
                 Target(9, 1, "read", "file", False): Counters(calls=1, bytes=99)}
    assert index.per_buffer(by_target) == {11: {"read": Counters(calls=1, bytes=10)},
                                           12: {"read": Counters(calls=2, bytes=25),
                                                "write": Counters(calls=1, bytes=1)}}
    assert sorted(index.per_buffer(by_target, alive_only=True)) == [12]
    assert not index.alive("dmabuf", 11, 0)


def test_an_empty_index_knows_nothing():
    index = BufferIndex()
    assert not index.alive("dmabuf", 11, 0) and index.buffer_of("dmabuf", 11, 0) == 0 and len(index) == 0
    assert index.gone({Target(11, 0, "read", "dmabuf", False): Counters()}, {}) == []
