"""The sources `record` runs (recorder.py has the Source seam): buffer snapshots and the I/O paths.

Both read the kernel's dma-buf list through one BufferFeed (inventory.index): one loaded iter/dmabuf
iterator, read once per tick, whose reads teach one BufferIndex. BufferSnapshots writes the buffers
every interval; IoPathSource attributes I/O targets to them. IoPathSource is polled first in a tick: it
drains its ring before the tick's read, so every buffer a drained record names exists or existed in it.

IoPathSource wraps one probes.tracer.Tracer (record=True, following the traced command and every process it
forks through a tgid set filled at sched_process_fork) and turns what it reads at each poll into session
rows (rows.py): PathSample, LatencyBucket, IoEvent, LifecycleEvent, Stack and StackCount, and Drop:
ring-buffer records lost since the previous poll, and new keys a full map refused (trace_model.MINIMAL_MAPS,
the maps the rows come from): what those would have counted is missing from the other rows. Its BufferBook
(buffers.py) keeps every buffer the lifecycle records, the reads and the I/O showed: BufferRecord, BufferName
and AllocStack rows; the lifecycle records also teach the buffer index, so I/O into a buffer made and freed
between two reads is its own.
"""
import os
import shutil
from types import SimpleNamespace
from typing import List

from ..errors import DmabufTopError
from ..inventory.index import BufferFeed
from ..probes.buffer_lifecycle import LifecycleRecord
from ..probes.hooks import FENTRY, State
from ..probes.iopaths import IoRecord
from ..probes.tracer import Tracer
from ..symbolize import Symbolizer, cgroup_paths
from ..trace_model import MINIMAL_MAPS
from . import session as records
from .buffers import BufferBook
from .cgroup_source import CgroupSource
from .rows import (
    amount_deltas,
    clean_frames,
    counter_deltas,
    hook_rows,
    io_event,
    latency_buckets,
    lifecycle_event,
    path_samples,
    stack_count_rows,
)
from .taskstats_source import TaskstatsSource

RING_DROPS = "iopaths ring buffer"


class BufferSnapshots:
    """Every dma-buf, from the tick's iter/dmabuf read, every `interval_s` and once at the end."""

    name = "buffers"

    def __init__(self, feed: BufferFeed):
        self._feed = feed
        self._opened = False
        self._interval_ns = 0
        self._last_ns = None

    def start(self, context):
        self._interval_ns = int(context.interval_s * 1e9)
        self._opened = True
        try:
            self._feed.open()
        except DmabufTopError as error:
            return [records.Hook("iter/dmabuf", "buffers", State.MISSING, "", f"buffer snapshots off: {error}")]
        return [records.Hook("iter/dmabuf", "buffers", State.LIVE, "iter/dmabuf", "periodic buffer snapshots")]

    def _snapshot(self, now_ns):
        self._last_ns = now_ns
        return [records.BufferSnapshot(now_ns, b.inode, b.exporter, b.name, b.size, b.file_refs,
                                       b.attachment_count, b.backing_inode) for b in self._feed.read(now_ns)]

    def poll(self, now_ns):
        if not self._feed.available or (self._last_ns is not None and now_ns - self._last_ns < self._interval_ns):
            return []
        return self._snapshot(now_ns)

    def stop(self, now_ns):
        if not self._opened:
            return []
        try:
            return self._snapshot(now_ns) if self._feed.available else []
        finally:
            self._feed.close()
            self._opened = False


class IoPathSource:
    """Per-path counters, per-event records, stacks, latency and lifecycle events from one Tracer."""

    name = "iopaths"

    def __init__(self, feed: BufferFeed, report=None, tracer_factory=None):
        self._feed = feed
        self._report = report
        self._tracer_factory = tracer_factory
        self._tracer = None
        self._feeding = False  # this source opened the feed (and closes it)
        self._previous = None
        self._dropped = 0
        self._map_full = {}
        self._stacks_written = set()
        self._symbolizer = Symbolizer()
        self._cgroups = {}
        self.book = None

    def start(self, context):
        try:
            if self._tracer_factory is None:
                self._tracer_factory = lambda pid: Tracer(pid=pid, record=True, stacks=True, report=self._report,
                                                          follow_children=True)
            self._tracer = self._tracer_factory(context.target_pid)
        except DmabufTopError as error:
            return [records.Hook("iopaths", "tracing", State.MISSING, "", f"I/O path tracing off: {error}")]
        hooks = hook_rows(self._tracer.hooks)
        # Read /proc/kallsyms now, before the command runs: in a poll it would stall the cadence
        # (seconds on a slow machine).
        self._tracer.kallsyms()
        # The objects allocation stacks may name when their process is gone before its maps are read: the
        # command's executable, and the shared libraries this process maps too (libc, the loader).
        self._symbolizer.remember(os.getpid())
        if context.command:
            self._symbolizer.learn_file(shutil.which(context.command[0]) or context.command[0])
        self._cgroups = cgroup_paths()
        self.book = BufferBook(self._alloc_kernel_frames, self._alloc_user_frames, self._cgroup_path)
        self._feeding = True
        try:
            self._feed.open()
        except DmabufTopError as error:
            hooks.append(records.Hook("iopaths/buffers", "attribution", State.MISSING, "",
                                      f"I/O is not attributed to buffers (inode 0): {error}"))
        self._previous = _empty_snapshot()
        return hooks

    def _drain(self, until_ns=None):
        """The ring's records, at most one ring's worth per call: a recorder slower than the
        producers then loses records to the kernel's dropped count, not its memory to a list
        that grows while the drain never catches up. until_ns (the last poll): go on, a ring's
        worth at a time, until a record made at or after it, so nothing made before is left."""
        limit = self._tracer.ring_capacity
        events = self._tracer.drain_records(max_records=limit)
        batch = events
        while until_ns is not None and len(batch) == limit and batch[-1].timestamp_ns < until_ns:
            batch = self._tracer.drain_records(max_records=limit)
            events += batch
        return events

    def poll(self, now_ns, final=False):
        if self._tracer is None:
            return []
        events = self._drain(until_ns=now_ns if final else None)
        read = self._feed.read(now_ns)  # after the drain: every buffer the drained records can name exists or existed
        buffers = self._feed.index
        lifecycle = [event for event in events if isinstance(event, LifecycleRecord)]
        buffers.learn_lifecycle(lifecycle)
        snapshot = self._tracer.snapshot(minimal=True)
        rows = []
        for record in lifecycle:
            rows += self.book.lifecycle(record)
        for b in read:
            rows += self.book.seen(now_ns, b.inode, b.exporter, b.name, b.size)
        for event in events:
            if isinstance(event, IoRecord):
                row = io_event(event, buffers)
                if row.inode:
                    self.book.used(row.inode, row.tgid, row.comm)
                rows.append(row)
            else:
                rows.append(lifecycle_event(event))
        rows += self.book.changed_rows()
        targets = counter_deltas(snapshot.by_target, self._previous.by_target)
        tasks = counter_deltas(snapshot.by_task, self._previous.by_task)
        rows += path_samples(now_ns, targets, tasks, buffers)
        rows += latency_buckets(targets)
        stacks = amount_deltas(snapshot.stacks, self._previous.stacks)
        rows += self._new_stacks(stacks)
        rows += stack_count_rows(stacks)
        if snapshot.dropped > self._dropped:
            rows.append(records.Drop(now_ns, RING_DROPS, snapshot.dropped - self._dropped))
            self._dropped = snapshot.dropped
        rows += self._map_full_drops(now_ns, getattr(snapshot, "map_full", {}))
        # Counters of buffers gone leave the kernel maps (the index's rule, shared with the live view and
        # the exporter): under churn io_by_target would fill and refuse new buffers.
        buffers.forget_gone(self._tracer, snapshot, self._previous.by_target)
        self._previous = snapshot
        return rows

    def _map_full_drops(self, now_ns, map_full):
        # The rows come from snapshot(minimal=True): a key its maps refused is missing from them.
        rows = []
        for name in MINIMAL_MAPS:
            refused = map_full.get(name, 0)
            if refused > self._map_full.get(name, 0):
                rows.append(records.Drop(now_ns, f"{name} map full", refused - self._map_full.get(name, 0)))
                self._map_full[name] = refused
        return rows

    def _alloc_kernel_frames(self, stack_id):
        if stack_id < 0:  # none taken: not an export, stacks off, or the kernel could not
            return []
        kallsyms = self._tracer.kallsyms()
        # An fentry/fexit program's frame stands for the function it hooks; a tracepoint's is left out.
        hooked = {status.program: status.target for status in self._tracer.hooks if status.via == FENTRY}
        return clean_frames([kallsyms.name(ip) for ip in self._tracer.alloc_stack_ips(stack_id)], hooked)

    def _alloc_user_frames(self, record):
        frames = self._tracer.alloc_user_stack(record.user_stack) if record.user_stack >= 0 else []
        return self._symbolizer.user_stack(record.tgid, frames)

    def _cgroup_path(self, cgroup_id):
        if cgroup_id not in self._cgroups:
            self._cgroups = cgroup_paths()  # a cgroup made since the last walk
        return self._cgroups.get(cgroup_id, "")

    def _new_stacks(self, stack_deltas):
        out = []
        for stack_id, _point, _path in stack_deltas:
            if stack_id < 0 or stack_id in self._stacks_written:
                continue  # a negative id: the kernel could not take that stack; the report says so
            self._stacks_written.add(stack_id)
            kallsyms = self._tracer.kallsyms()
            hooked = {status.program: status.target for status in self._tracer.hooks}
            frames = clean_frames([kallsyms.name(ip) for ip in self._tracer.stack_ips(stack_id)], hooked)
            if frames:
                out.append(records.Stack(stack_id, "\n".join(frames)))
        return out

    def stop(self, now_ns):
        try:
            return self.poll(now_ns, final=True)
        finally:
            if self._tracer is not None:
                self._tracer.close()
                self._tracer = None
            if self._feeding:
                self._feed.close()
                self._feeding = False


def _empty_snapshot():
    return SimpleNamespace(by_target={}, by_task={}, stacks={}, dropped=0)


def all_sources(report=None, iterator_factory=None, tracer_factory=None, holders_factory=None) -> List:
    """Every source `record` runs, in poll order: the I/O paths drain their ring before the tick's
    buffer read (see the module doc), which the buffer snapshots and the per-cgroup totals then reuse.
    The factories: other iterators and tracers than the kernel's (tests)."""
    feed = BufferFeed(iterator_factory)
    return [IoPathSource(feed, report=report, tracer_factory=tracer_factory), BufferSnapshots(feed),
            CgroupSource(feed, holders_factory), TaskstatsSource()]
