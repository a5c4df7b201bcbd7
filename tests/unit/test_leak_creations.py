"""leak_creations.CreationFeed turns lifecycle records into leaks.Creation, bounded, without a kernel."""
import time
from types import SimpleNamespace

from dmabuf_top import leak_creations
from dmabuf_top.leak_creations import CreationFeed
from dmabuf_top.probes.buffer_lifecycle import LifecycleRecord, UserFrame
from dmabuf_top.probes.hooks import FENTRY


class FakeKallsyms:
    def name(self, ip):
        return {1: "dma_heap_ioctl+0x10", 2: "bpf_prog_abc_lifecycle_fexit_x"}.get(ip, f"{ip:#x}")


class FakeTracer:
    def __init__(self, records):
        self.records = list(records)
        self.hooks = [SimpleNamespace(program="lifecycle_fexit_x", target="dma_buf_export", via=FENTRY)]
        self.ring_capacity = 100
        self.closed = False

    def kallsyms(self):
        return FakeKallsyms()

    def drain_records(self, max_records=None):
        out, self.records = self.records[:max_records], self.records[max_records:]
        return out

    def alloc_stack_ips(self, stack_id):
        return [2, 1] if stack_id == 7 else []

    def alloc_user_stack(self, stack_id):
        return [UserFrame("ab" * 20, 0x1234)] if stack_id == 3 else []

    def close(self):
        self.closed = True


class FakeSymbolizer:
    def __init__(self):
        self.remembered = []

    def remember(self, pid):
        self.remembered.append(pid)
        return True

    def user_stack(self, pid, frames):
        self.remembered.append(pid)
        return [f"make_buffer+{frame.offset:#x} (creator)" for frame in frames]


def export(inode, pid=40, kernel=7, user=3, cgroup=5, ts=1000):
    return LifecycleRecord(pid, "creator", "export", 3, ts, inode, 4096, tid=pid + 1, cgroup_id=cgroup,
                           kernel_stack=kernel, user_stack=user)


def feed(records, cgroups=None):
    tracer = FakeTracer(records)
    return CreationFeed(lambda: tracer, FakeSymbolizer(), lambda: dict(cgroups or {5: "/system.slice/a.service"})), \
        tracer


def test_export_becomes_a_creation_with_cgroup_and_kernel_then_user_frames():
    creations, tracer = feed([export(11), export(12, kernel=-1, user=-1, cgroup=0)])
    with creations:
        got = creations.drain()
    assert tracer.closed
    first = got[11]
    assert (first.pid, first.tid, first.comm, first.created_ns) == (40, 41, "creator", 1000)
    assert first.cgroup == b"/system.slice/a.service"
    # the fexit program's own frame stands for the function it hooks
    assert first.stack == ("dma_buf_export", "dma_heap_ioctl+0x10", "make_buffer+0x1234 (creator)")
    assert got[12].stack is None and got[12].cgroup is None


def test_release_forgets_and_keep_only_drops_buffers_gone_before_the_read():
    release = LifecycleRecord(40, "creator", "release", -1, 2000, 11, 4096)
    creations, _ = feed([export(11), export(12, ts=1500), export(13, ts=5000), release])
    with creations:
        creations.drain()
        assert set(creations.creations) == {12, 13}
        creations.keep_only([], read_ns=3000)  # 13 was made after that read: it may not be in it yet
        assert set(creations.creations) == {13}


def test_a_cgroup_made_after_the_walk_is_found_by_walking_again():
    walks = []

    def read():
        walks.append(1)
        return {5: "/a"} if len(walks) == 1 else {5: "/a", 9: "/b"}

    tracer = FakeTracer([export(11, cgroup=9)])
    with CreationFeed(lambda: tracer, FakeSymbolizer(), read) as creations:
        assert creations.drain()[11].cgroup == b"/b"


def test_exports_past_the_cap_are_counted_not_kept(monkeypatch):
    monkeypatch.setattr(leak_creations, "MAX_CREATIONS", 2)
    creations, _ = feed([export(inode) for inode in (1, 2, 3)])
    with creations:
        assert set(creations.drain()) == {1, 2} and creations.lost == 1


class PolledTracer(FakeTracer):
    """Records come by poll_records, as from the ring while the sampler's thread reads other maps."""

    def __init__(self, records, live_export=True):
        super().__init__(records)
        self.hooks = [SimpleNamespace(program="lifecycle_fexit_export", target="dma_buf_export", via=FENTRY,
                                      live=live_export)]
        self.polls = 0

    def poll_records(self, timeout_ms=100, max_records=None):
        self.polls += 1
        out, self.records = self.records[:1], self.records[1:]  # one per wait: the thread keeps following
        return out


def test_a_borrowed_tracer_is_followed_in_a_thread_and_left_open():
    tracer = PolledTracer([export(11), export(12, kernel=-1, user=-1)])
    feed = CreationFeed(symbolizer=FakeSymbolizer(), read_cgroups=lambda: {5: "/a"}, tracer=tracer).open()
    assert feed.sees_exports
    feed.follow()
    deadline = time.monotonic() + 5
    while len(tracer.records) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    copy = feed.current()
    feed.close()
    assert set(copy) == {11, 12} and copy[12].stack is None and copy[12].kernel_frames == 0
    assert copy is not feed.creations and not tracer.closed  # borrowed: the sampler closes it


def test_no_live_export_hook_means_creators_not_known():
    feed = CreationFeed(symbolizer=FakeSymbolizer(), read_cgroups=dict, tracer=PolledTracer([], live_export=False))
    assert not feed.open().sees_exports


def test_kernel_and_user_frames_are_told_apart():
    creations, _ = feed([export(11)])
    with creations:
        made = creations.drain()[11]
    assert made.stack == ("dma_buf_export", "dma_heap_ioctl+0x10", "make_buffer+0x1234 (creator)")
    assert made.kernel_frames == 2 and made.user_stack == ("make_buffer+0x1234 (creator)",)


def hold(inode, event, pid=50, ts=2000):
    return LifecycleRecord(pid, "importer", event, -1, ts, inode, 4096)


def test_hold_events_are_kept_last_few_per_buffer_and_leave_with_it():
    tracer = PolledTracer([])
    tracer.hooks = [SimpleNamespace(program=name, target=name, via=None, live=True)
                    for name in ("lifecycle_dma_buf_get", "lifecycle_dma_buf_put")]
    creations = CreationFeed(symbolizer=FakeSymbolizer(), read_cgroups=dict, tracer=tracer).open()
    for ts, event in enumerate(("get", "put", "attach", "get", "put", "detach")):
        creations.learn(hold(11, event, ts=ts))
    creations.learn(hold(12, "get"))
    held = creations.hold_events()
    assert [e.event for e in held[11]] == ["attach", "get", "put", "detach"]  # the last four, oldest first
    assert (held[12][0].pid, held[12][0].comm) == (50, "importer")
    creations.learn(LifecycleRecord(50, "x", "release", -1, 9, 12, 4096))
    creations.keep_only([], read_ns=10)  # 11 is gone too (its release lost)
    assert creations.hold_events() == {}


def test_hold_events_are_not_known_without_the_get_put_hooks():
    creations = CreationFeed(symbolizer=FakeSymbolizer(), read_cgroups=dict, tracer=PolledTracer([])).open()
    creations.learn(hold(11, "get"))
    assert creations.hold_events() is None
