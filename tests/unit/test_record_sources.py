"""recording: counter deltas, buffer attribution (inventory.index), row building and the poll loop, without a kernel."""
from types import SimpleNamespace

from dmabuf_top.inventory.index import BufferFeed, BufferIndex
from dmabuf_top.inventory.types import Buffer, Holders
from dmabuf_top.probes.buffer_lifecycle import LifecycleRecord
from dmabuf_top.probes.hooks import HookState, State
from dmabuf_top.probes.iopaths import Counters, IoRecord, Target
from dmabuf_top.probes.task_dmabufs import HolderColumns
from dmabuf_top.recording import session as s
from dmabuf_top.recording.recorder import RecordingContext
from dmabuf_top.recording.rows import (
    amount_deltas,
    clean_frames,
    counter_deltas,
    io_event,
    latency_buckets,
    path_samples,
    session_path,
)
from dmabuf_top.recording.sources import RING_DROPS, IoPathSource, all_sources
from dmabuf_top.recording.taskstats_source import TaskstatsSource, descendants, parse_ppid, taskstats_sample
from dmabuf_top.taskstats import Delay, TaskStats

MIB = 1 << 20
HEAP = Target(inode=11, dev=0, path="read", kind="dmabuf", direct=False)
MEMFD = Target(inode=500, dev=7, path="read", kind="shmem", direct=True)
ANON = Target(inode=0, dev=0, path="read", kind="none", direct=False)


def counters(**values):
    hist = [0] * 32
    for bucket, count in values.pop("hist", {}).items():
        hist[bucket] = count
    return Counters(**values, latency_hist=tuple(hist))


def buffers():
    known = BufferIndex()
    known.learn([SimpleNamespace(inode=11, backing_inode=0, backing_dev=0),
                 SimpleNamespace(inode=12, backing_inode=500, backing_dev=7)])
    return known


def test_counter_deltas_subtract_and_drop_what_did_not_move():
    before = {HEAP: counters(calls=1, bytes=MIB), ANON: counters(calls=2, bytes=10)}
    after = {HEAP: counters(calls=3, bytes=3 * MIB), ANON: counters(calls=2, bytes=10), MEMFD: counters(calls=1)}
    assert counter_deltas(after, before) == {HEAP: counters(calls=2, bytes=2 * MIB), MEMFD: counters(calls=1)}


def test_amount_deltas_of_stacks():
    before = {(1, "gup", "read"): (2, 512)}
    after = {(1, "gup", "read"): (3, 1024), (2, "cpu_copy_read", "read"): (1, 64), (3, "gup", "other"): (0, 0)}
    assert amount_deltas(after, before) == {(1, "gup", "read"): (1, 512), (2, "cpu_copy_read", "read"): (1, 64)}
    assert amount_deltas(before, before) == {}


def test_buffer_map_attributes_dmabufs_and_udmabuf_memfds_and_remembers_freed_ones():
    known = buffers()
    known.learn([])  # both freed: still known
    assert known.buffer_of("dmabuf", 11, 0) == 11
    assert known.buffer_of("shmem", 500, 7) == 12
    assert known.buffer_of("shmem", 500, 8) == 0  # same inode number on another filesystem
    assert known.buffer_of("dmabuf", 99, 0) == 0  # not a buffer we saw
    assert known.buffer_of("file", 11, 0) == 0


def test_buffer_map_forgets_a_buffer_three_reads_after_the_last_that_showed_it():
    known = buffers()  # read 1 shows both
    known.learn([])  # read 2: both freed
    known.learn([])  # read 3: a record made before read 2 may reach the poll of read 3
    assert known.buffer_of("dmabuf", 11, 0) == 11 and known.buffer_of("shmem", 500, 7) == 12
    known.learn([])
    assert known.buffer_of("dmabuf", 11, 0) == 0 and known.buffer_of("shmem", 500, 7) == 0
    assert len(known) == 0


def test_buffer_map_stays_bounded_under_churn():
    # Every read shows 5 heap buffers and 5 udmabufs never seen before (and never again), as under
    # the soak's churn: what is kept is three reads' worth, whatever the number of reads.
    known = BufferIndex()
    inode = 1000
    for _ in range(5000):
        shown = []
        for index in range(10):
            inode += 1
            udmabuf = index % 2
            shown.append(SimpleNamespace(inode=inode, backing_inode=inode + 10**9 if udmabuf else 0,
                                         backing_dev=7 if udmabuf else 0))
        known.learn(shown)
        assert len(known) <= 3 * (10 + 5)
    assert len(known) == 3 * (10 + 5)
    assert known.buffer_of("dmabuf", inode, 0) == inode
    assert known.buffer_of("shmem", inode + 10**9, 7) == inode  # the last one was a udmabuf
    assert known.buffer_of("shmem", inode - 1 + 10**9, 7) == 0  # the one before, a heap buffer
    assert known.buffer_of("dmabuf", inode - 29, 0) == inode - 29  # the first of the three reads kept
    assert known.buffer_of("dmabuf", inode - 30, 0) == 0  # the last of the read before


def test_path_samples_partition_the_counters():
    targets = {HEAP: counters(calls=1, bytes=MIB, cpu_copied=MIB),
               MEMFD: counters(calls=1, bytes=2 * MIB, pinned_pages=512),
               ANON: counters(calls=4, bytes=100, cpu_copied=100, errors=1)}
    tasks = {(42, "read"): counters(calls=6, bytes=MIB + 2 * MIB + 100),
             (42, "other"): counters(cpu_copied=64, pc_added=3)}
    rows = path_samples(1000, targets, tasks, buffers())
    assert rows == [
        s.PathSample(1000, 0, 0, "read", 100, 100, 0, 0, 4, 1),
        s.PathSample(1000, 0, 42, "other", 0, 64, 0, 3, 0, 0),
        s.PathSample(1000, 11, 0, "read", MIB, MIB, 0, 0, 1, 0),
        s.PathSample(1000, 12, 0, "read_direct", 2 * MIB, 0, 512, 0, 1, 0),
    ]
    # Summed over rows: every byte once (the per-process read counters are not added again).
    assert sum(r.bytes for r in rows) == MIB + 2 * MIB + 100


def test_targets_of_one_buffer_and_path_merge_into_one_row():
    other_anon = Target(inode=77, dev=3, path="read", kind="file", direct=False)
    rows = path_samples(5, {ANON: counters(calls=1, bytes=10), other_anon: counters(calls=2, bytes=5)}, {}, buffers())
    assert rows == [s.PathSample(5, 0, 0, "read", 15, 0, 0, 0, 3, 0)]


def test_latency_buckets_add_per_path():
    targets = {HEAP: counters(calls=3, hist={3: 2, 7: 1}), ANON: counters(calls=1, hist={3: 1}),
               MEMFD: counters(calls=1, hist={13: 1})}
    assert latency_buckets(targets) == [s.LatencyBucket("read", 3, 3), s.LatencyBucket("read", 7, 1),
                                        s.LatencyBucket("read_direct", 13, 1)]


def test_session_path_names_direct_io_apart():
    assert session_path("read", False) == "read" and session_path("write", True) == "write_direct"


def test_io_event_from_a_record():
    record = IoRecord(tgid=42, tid=43, comm="python3", path="read", kind="shmem", direct=True, timestamp_ns=9000,
                      latency_ns=800, ret=2 * MIB, requested=2 * MIB, inode=500, dev=7, cpu_copied=0,
                      pinned_pages=512, pc_added=0)
    assert io_event(record, buffers()) == s.IoEvent(9000, 800, 42, 43, "python3", "read_direct", 12, 2 * MIB, 0, -1,
                                                    0, 512)
    failed = IoRecord(42, 43, "python3", "read", "dmabuf", True, 9000, 5, -14, 4096, 11, 0, 0, 0, 0)
    event = io_event(failed, buffers())
    assert (event.bytes, event.errno, event.inode) == (0, 14, 11)


def test_clean_frames_show_the_hooked_function_as_the_leaf():
    frames = ["bpf_prog_4f0af96894539e21_copy_filemap_read", "bpf_trampoline_6442529929", "vfs_read", "ksys_read"]
    assert clean_frames(frames, {"copy_filemap_read": "filemap_read"}) == ["filemap_read", "vfs_read", "ksys_read"]
    # A program of ours the map does not name is still our probe, not the kernel's path: left out.
    assert clean_frames(["bpf_prog_ab_unknown_prog", "x"], {}) == ["x"]


class FakeTracer:
    """Cumulative snapshots, as the kernel maps give them, from a script of steps."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.hooks = [HookState("copy_filemap_read", "cpu_copy", "filemap_read", State.LIVE, "fentry", "")]
        self.closed = False
        self.records = []
        self.forgotten = []

    def kallsyms(self):
        return SimpleNamespace(name=lambda ip: {1: "bpf_prog_aa_copy_filemap_read", 2: "vfs_read"}[ip])

    def stack_ips(self, stack_id):
        return [1, 2]

    ring_capacity = 16384

    def drain_records(self, max_records=None):
        records, self.records = self.records, []
        return records

    def snapshot(self, minimal=False):
        assert minimal  # the recorder reads only the maps its rows come from
        return self.steps.pop(0)

    def forget(self, targets=()):
        self.forgotten.append(sorted(targets, key=str))

    def close(self):
        self.closed = True


def fed(read):
    """A BufferFeed whose iterator's reads are read()."""
    return BufferFeed(lambda: SimpleNamespace(read=read, close=lambda: None))


def read_buffer(inode, backing_inode=0, backing_dev=0, exporter="system", name=None, size=MIB):
    """One buffer of an iterator read, with what the recording keeps of it."""
    return SimpleNamespace(inode=inode, backing_inode=backing_inode, backing_dev=backing_dev, exporter=exporter,
                           name=name, size=size)


def snap(by_target=None, by_task=None, stacks=None, dropped=0, lifecycle=None):
    return SimpleNamespace(by_target=by_target or {}, by_task=by_task or {}, stacks=stacks or {}, dropped=dropped,
                           lifecycle=lifecycle or {})


def test_io_path_source_writes_deltas_stacks_and_drops_per_poll():
    tracer = FakeTracer([
        snap({HEAP: counters(calls=1, bytes=MIB, cpu_copied=MIB, hist={5: 1})},
             stacks={(7, "cpu_copy_read", "read"): (1, MIB)}),
        snap({HEAP: counters(calls=1, bytes=MIB, cpu_copied=MIB, hist={5: 1})},
             stacks={(7, "cpu_copy_read", "read"): (1, MIB)}, dropped=3),
        snap({HEAP: counters(calls=2, bytes=3 * MIB, cpu_copied=3 * MIB, hist={5: 2})},
             stacks={(7, "cpu_copy_read", "read"): (2, 3 * MIB), (-17, "gup", "read"): (1, 4)}, dropped=3),
    ])
    source = IoPathSource(fed(lambda: [read_buffer(11, name=b"w", size=4 * MIB)]),
                          tracer_factory=lambda pid: tracer)
    hooks = source.start(RecordingContext(1234, 0.1))
    assert hooks == [s.Hook("copy_filemap_read", "cpu_copy", State.LIVE, "fentry", "filemap_read")]
    tracer.records = [LifecycleRecord(1234, "load", "export", -1, 50, 11, 4 * MIB)]
    first = source.poll(100)
    assert first == [s.BufferName(100, 11, b"w", "snapshot", 0),
                     s.LifecycleEvent(50, 11, "export", 1234, "load", 4 * MIB, -1),
                     s.BufferRecord(11, "system", 4 * MIB, b"w", 1234, 0, "load", 0, "", 50, 0, -1, -1, "1234 load"),
                     s.PathSample(100, 11, 0, "read", MIB, MIB, 0, 0, 1, 0), s.LatencyBucket("read", 5, 1),
                     s.Stack(7, "filemap_read\nvfs_read"), s.StackCount(7, "copy_read", "read", 1, MIB)]
    assert source.poll(200) == [s.Drop(200, RING_DROPS, 3)]
    final = source.stop(300)
    assert final == [s.PathSample(300, 11, 0, "read", 2 * MIB, 2 * MIB, 0, 0, 1, 0), s.LatencyBucket("read", 5, 1),
                     s.StackCount(-17, "gup", "read", 1, 4), s.StackCount(7, "copy_read", "read", 1, 2 * MIB)]
    assert tracer.closed


def test_io_path_source_that_cannot_start_records_why():
    from dmabuf_top.errors import NeedsPrivilege

    def refuse(pid):
        raise NeedsPrivilege("I/O path tracing needs root")

    source = IoPathSource(BufferFeed(), tracer_factory=refuse)
    assert source.start(RecordingContext(None, 0.5)) == [
        s.Hook("iopaths", "tracing", State.MISSING, "", "I/O path tracing off: I/O path tracing needs root")]
    assert source.poll(1) == [] and source.stop(2) == []


def test_descendants_follow_ancestry():
    parents = {1: 0, 100: 1, 101: 100, 102: 101, 103: 1, 104: 102}
    assert descendants(100, parents) == [100, 101, 102, 104]
    assert descendants(999, parents) == [999]


def test_parse_ppid_survives_hostile_comms():
    assert parse_ppid("4242 (a) b) (c) S 17 4242 4242 0 -1") == 17


def test_taskstats_sample_and_source():
    stats = TaskStats(pid=0, ppid=1, comm="python3", version=14,
                      delays={"cpu": Delay(3, 300), "blkio": Delay(1, 7000)}, read_bytes=4096, write_bytes=None)
    assert taskstats_sample(5, 42, stats) == s.TaskstatsSample(5, 42, 42, "python3", 0, 300, 7000, 0, 0, 4096, 0, 0, 0)

    class Client:
        def for_process(self, tgid):
            return None if tgid == 43 else stats

        def close(self):
            pass

    source = TaskstatsSource(client_factory=Client, parents=lambda: {42: 1, 43: 42, 44: 43, 7: 1})
    hooks = source.start(RecordingContext(42, 0.1))
    assert [(h.name, h.live) for h in hooks] == [("taskstats", True)]
    assert [r.tgid for r in source.poll(10)] == [42, 44]  # 43 has exited
    assert [r.tgid for r in source.stop(20)] == [42, 44]
    assert TaskstatsSource().start(RecordingContext(None, 0.1))[0].live is False


class EndlessRing(FakeTracer):
    """A ring buffer whose producers never pause (the soak's churn against a slow reader): every drain
    finds more. Each record is a lifecycle event one microsecond after the previous."""

    ring_capacity = 500

    def __init__(self, steps):
        super().__init__(steps)
        self.made = 0

    def drain_records(self, max_records=None):
        assert max_records is not None, "an unbounded drain of an endless ring never returns"
        out = []
        for _ in range(max_records):
            self.made += 1
            out.append(LifecycleRecord(1234, "churn", "export", -1, self.made * 1000, self.made, 4096))
        return out


def test_io_path_source_drains_at_most_a_ring_per_poll_and_up_to_the_stop_at_the_end():
    tracer = EndlessRing([snap(), snap(), snap()])
    source = IoPathSource(fed(lambda: []), tracer_factory=lambda pid: tracer)
    source.start(RecordingContext(None, 0.5))
    for now in (1, 2):
        rows = source.poll(now)
        events = [row for row in rows if isinstance(row, s.LifecycleEvent)]
        assert len(events) == 500 and len(rows) == 1000  # and a buffers row for each buffer exported
        assert {row.inode for row in rows if isinstance(row, s.BufferRecord)} == {row.inode for row in events}
    # The last drain goes on until the records reach the stop time (records 1001 to 3000 here).
    final = [row for row in source.stop(3_000_000) if isinstance(row, s.LifecycleEvent)]
    assert len(final) == 2000 and final[-1].time_ns == 3_000_000
    assert tracer.closed


def test_io_path_source_forgets_the_counters_of_buffers_gone_and_counts_a_comeback_from_zero():
    # HEAP (inode 11) is read into, then freed; MEMFD's udmabuf (12) stays alive but idle.
    reads = iter([[read_buffer(11), read_buffer(12, backing_inode=500, backing_dev=7)]] +
                 [[read_buffer(12, backing_inode=500, backing_dev=7)]] * 4)
    tracer = FakeTracer([
        snap({HEAP: counters(calls=1, bytes=MIB), MEMFD: counters(calls=1, bytes=MIB)},
             lifecycle={(11, "export"): (1, MIB), (12, "export"): (1, MIB)}),
        snap({HEAP: counters(calls=2, bytes=2 * MIB), MEMFD: counters(calls=1, bytes=MIB)}),  # 11 gone, moved
        snap({HEAP: counters(calls=2, bytes=2 * MIB), MEMFD: counters(calls=1, bytes=MIB)},  # 11 idle: forgotten
             lifecycle={(11, "export"): (1, MIB), (11, "put"): (1, MIB), (12, "export"): (1, MIB)}),
        # The same key again (an inode number reused, say): the kernel made it afresh, from zero.
        snap({HEAP: counters(calls=1, bytes=4096), MEMFD: counters(calls=1, bytes=MIB)}),
        snap({HEAP: counters(calls=1, bytes=4096), MEMFD: counters(calls=1, bytes=MIB)}),
    ])
    source = IoPathSource(fed(lambda: next(reads)), tracer_factory=lambda pid: tracer)
    source.start(RecordingContext(None, 0.5))
    source.poll(1)
    assert tracer.forgotten == []
    assert [r for r in source.poll(2) if isinstance(r, s.PathSample)] == [
        s.PathSample(2, 11, 0, "read", MIB, 0, 0, 0, 1, 0)]
    assert tracer.forgotten == []  # it moved in this interval: not idle yet
    assert [r for r in source.poll(3) if isinstance(r, s.PathSample)] == []
    assert tracer.forgotten == [[HEAP]]  # the alive, idle udmabuf stays
    # Counted as new, not as 4096 - 2 MiB.
    assert [r for r in source.poll(4) if isinstance(r, s.PathSample)] == [
        s.PathSample(4, 0, 0, "read", 4096, 0, 0, 0, 1, 0)]
    assert source.poll(5) == [] and len(tracer.forgotten) == 2


def test_io_path_source_keeps_what_full_maps_refused_as_drops_per_poll():
    tracer = FakeTracer([SimpleNamespace(**vars(snap()), map_full=counts) for counts in (
        {"io_by_target": 0, "pagecache_by_file": 5},  # a map no session row comes from: not a drop here
        {"io_by_target": 7, "traced_tgids": 1, "pagecache_by_file": 9},
        {"io_by_target": 7, "traced_tgids": 1},
        {"io_by_target": 10, "traced_tgids": 1},
    )])
    source = IoPathSource(fed(lambda: []), tracer_factory=lambda pid: tracer)
    source.start(RecordingContext(None, 0.5))
    assert source.poll(1) == []
    assert source.poll(2) == [s.Drop(2, "io_by_target map full", 7), s.Drop(2, "traced_tgids map full", 1)]
    assert source.poll(3) == []
    assert source.stop(4) == [s.Drop(4, "io_by_target map full", 3)]


def test_a_record_tick_reads_the_dmabuf_list_once_for_its_snapshots_and_its_attribution():
    reads = []
    closed = []

    def read():
        reads.append(len(reads))
        return [Buffer(inode=11, size=MIB, exporter="system", name=None, file_refs=1, attachment_count=0)]

    iterator = SimpleNamespace(read=read, close=lambda: closed.append(True))
    tracer = FakeTracer([snap({HEAP: counters(calls=n, bytes=n * MIB)}) for n in (1, 2, 3)])
    holders = SimpleNamespace(read_columns=lambda: HolderColumns.from_holders(Holders([], [], {})),
                              close=lambda: None)
    sources = all_sources(iterator_factory=lambda: iterator, tracer_factory=lambda pid: tracer,
                          holders_factory=lambda: holders)
    assert [source.name for source in sources] == ["iopaths", "buffers", "cgroups", "taskstats"]  # drain, then read
    for source in sources:
        source.start(RecordingContext(None, 0.0))
    for tick, now in enumerate((100, 200), start=1):
        rows = [row for source in sources for row in source.poll(now)]  # as the Recorder polls: one `now`
        assert s.PathSample(now, 11, 0, "read", MIB, 0, 0, 0, 1, 0) in rows  # attributed by that read...
        assert [row.inode for row in rows if isinstance(row, s.BufferSnapshot)] == [11]  # ...and written
        assert len(reads) == tick
    final = [row for source in sources for row in source.stop(300)]
    assert [row.time_ns for row in final if isinstance(row, s.BufferSnapshot)] == [300]
    assert len(reads) == 3 and closed == [True]  # one read per tick, the stop's included; one iterator
