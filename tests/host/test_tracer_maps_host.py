"""The tracer's maps on the host kernel: a full map counts the new keys it refused (and record keeps them
as drops); counters of objects gone are deleted by their reader (Tracer.forget); lookup_all reads in batches."""
import mmap
import os

import pytest

from dmabuf_top.probes.tracer import Tracer
from dmabuf_top.render_trace import render_text

pytestmark = pytest.mark.root


class MemfdTargets:
    """count memfds mapped shared (shmem, as behind a udmabuf) and a file to read a page from into
    them: each mapping is a target of its own for the tracer."""

    def __init__(self, directory, count):
        source = directory / "source"
        source.write_bytes(b"s" * 4096)
        self.source_fd = os.open(source, os.O_RDONLY)
        self.memfds, self.mappings = [], []
        for _ in range(count):
            fd = os.memfd_create("tracer-maps-test")
            os.ftruncate(fd, 4096)
            self.memfds.append(fd)
            self.mappings.append(mmap.mmap(fd, 4096))

    def read_into(self, index):
        os.lseek(self.source_fd, 0, os.SEEK_SET)
        os.readv(self.source_fd, [memoryview(self.mappings[index])])

    def close(self):
        os.close(self.source_fd)
        for fd, mapping in zip(self.memfds, self.mappings):
            mapping.close()
            os.close(fd)


@pytest.fixture
def memfd_targets(tmp_path):
    made = []

    def make(count):
        made.append(MemfdTargets(tmp_path, count))
        return made[-1]

    yield make
    for targets in made:
        targets.close()


def test_forget_deletes_a_targets_counters_and_a_new_read_counts_from_zero(memfd_targets):
    targets = memfd_targets(1)
    with Tracer(pid=os.getpid(), ignore_self=False) as tracer:
        inode = os.fstat(targets.memfds[0]).st_ino
        for _ in range(3):
            targets.read_into(0)
        mine = [t for t in tracer.snapshot().by_target if t.kind == "shmem" and t.inode == inode]
        assert len(mine) == 1
        assert tracer.snapshot().by_target[mine[0]].calls == 3
        assert tracer.forget(targets=mine) == 1
        assert mine[0] not in tracer.snapshot().by_target
        assert tracer.forget(targets=mine) == 0  # not in the last snapshot: nothing to delete
        targets.read_into(0)
        again = tracer.snapshot().by_target[mine[0]]
    assert again.calls == 1 and again.bytes == 4096


def test_a_full_map_counts_what_it_refused_and_the_rest_is_still_exact(memfd_targets):
    # io_by_target with room for 4 targets; reads into 10 memfd mappings (10 new targets) and one
    # more read into each of the first ones. Every call is still in io_by_task (it has room); the
    # calls missing from io_by_target are exactly what map_full counted (this process's own stray reads
    # may take a slot too), and trace's text says so.
    targets = memfd_targets(10)
    with Tracer(pid=os.getpid(), ignore_self=False, max_entries={"io_by_target": 4}) as tracer:
        for index in list(range(10)) + [0, 1]:
            targets.read_into(index)
        snap = tracer.snapshot()
    assert len(snap.by_target) == 4
    in_tasks = sum(c.calls for (tgid, path), c in snap.by_task.items() if path != "other")
    in_targets = sum(c.calls for c in snap.by_target.values())
    refused = snap.map_full["io_by_target"]
    assert refused >= 10 - 4 and in_tasks == in_targets + refused
    assert {name: count for name, count in snap.map_full.items() if name != "io_by_target"} == \
        dict.fromkeys(["io_by_task", "pagecache_by_file", "stack_counts", "lifecycle_counts",
                       "traced_tgids"], 0)
    assert snap.to_dict()["map_full"]["io_by_target"] == refused
    text = render_text(snap.per_path(), snap.missing_concerns(), snap.dropped, map_full=snap.map_full)
    assert f"map full: io_by_target refused {refused} new keys" in text


READS_INTO_MEMFDS = """
import mmap, os, sys
source = os.open(sys.argv[1], os.O_RDONLY)
for _ in range(12):
    fd = os.memfd_create("reader")
    os.ftruncate(fd, 4096)
    with mmap.mmap(fd, 4096) as mapping:
        os.lseek(source, 0, os.SEEK_SET)
        os.readv(source, [memoryview(mapping)])
    os.close(fd)
"""


def test_record_keeps_a_full_maps_refusals_as_dropped_events(tmp_path):
    import sys

    from dmabuf_top.analysis import tables
    from dmabuf_top.inventory.index import BufferFeed
    from dmabuf_top.recording.recorder import Recorder
    from dmabuf_top.recording.session import Session, SessionWriter
    from dmabuf_top.recording.sources import IoPathSource

    source = tmp_path / "source"
    source.write_bytes(b"s" * 4096)
    path = tmp_path / "full.db"
    tiny = IoPathSource(BufferFeed(), tracer_factory=lambda pid: Tracer(
        pid=pid, record=True, follow_children=True, max_entries={"io_by_target": 2}))
    with SessionWriter(path) as writer:
        result = Recorder(writer, [tiny], interval_s=0.2,
                          command=[sys.executable, "-c", READS_INTO_MEMFDS, str(source)]).run()
    assert result.exit_code == 0
    with Session(path) as session:
        dropped = tables.dropped_events(session)
        memfd_reads = session.query("SELECT count(*) FROM io_events WHERE path = 'read' AND bytes = 4096")[0][0]
    # 12 memfds, 12 new targets, room for 2 (the interpreter's own reads may take those first).
    assert dropped.get("io_by_target map full", 0) >= 10, dropped
    assert memfd_reads == 12  # the ring buffer still carried every call


def test_lookup_all_reads_what_items_reads_in_batches(memfd_targets):
    targets = memfd_targets(40)
    with Tracer(pid=os.getpid(), ignore_self=False) as tracer:
        for index in range(40):
            targets.read_into(index)
        io_map = tracer._obj.map("io_by_target")
        by_items = dict(io_map.items())
        assert len(by_items) >= 40
        assert dict(io_map.lookup_all(batch=7)) == by_items  # several batches, the last one short
        assert dict(io_map.lookup_all()) == by_items
