"""Recorder sources for the I/O paths, dma-buf lifecycle and taskstats (see recorder.py for the Source seam).

IoPathSource wraps one probes.tracer.Tracer (record=True, following the traced command and
every process it forks through a tgid set filled at sched_process_fork) and turns what
it reads at each poll into session rows:

- PathSample: the delta of the cumulative in-kernel counters since the previous poll,
  one row per (buffer, path) from the per-target counters (tgid 0), plus one row per
  process for work seen outside a traced syscall (path "other", inode 0). The rows
  partition the counters, so any column summed over rows is the total; per-process
  detail of the traced calls is in io_events (which carry the tgid). A target becomes a
  buffer inode when it is a dma-buf mapping, or a memfd behind a udmabuf; anything
  else (anonymous memory, a plain file) is inode 0. O_DIRECT calls get their own path
  name ("read_direct"), so the zero-copy picture separates them from buffered calls.
- LatencyBucket: the deltas of the per-target log2 histograms, per path.
- IoEvent and LifecycleEvent: the ring buffer's per-event records.
- Stack and StackCount: kernel stacks at copy and GUP points (symbolized once per id).
- Drop: ring-buffer records lost since the previous poll, and new keys a full map refused
  (trace_model.MINIMAL_MAPS, the maps the rows come from): what those would have counted is missing
  from the rows above.

TaskstatsSource samples delay accounting of the traced command and its descendants.

The delta and mapping logic is in pure functions below, tested without a kernel.
"""
import os
from contextlib import ExitStack
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from . import session as records
from .probes.hooks import State
from .errors import DmabufTopError
from .probes.iopaths import Counters, IoRecord
from .stacks import kernel_frames

RING_DROPS = "iopaths ring buffer"
# The tracer's stack points, by the names the session schema uses.
STACK_POINTS = {"cpu_copy_read": "copy_read", "cpu_copy_write": "copy_write", "gup": "gup"}


# ---------------------------------------------------------------------------------------------
# Pure functions: deltas, attribution, row building


def counter_deltas(current: Mapping, previous: Mapping) -> Dict:
    """{key: current - previous} for keys whose counters moved (a key new since then counts from zero)."""
    deltas = {}
    for key, counters in current.items():
        before = previous.get(key)
        delta = counters - before if before is not None else counters
        if any(getattr(delta, name) for name in Counters.SCALARS):
            deltas[key] = delta
    return deltas


def amount_deltas(current: Mapping[object, Tuple[int, int]], previous: Mapping) -> Dict:
    """For (hits, amount) pairs: {key: (hits delta, amount delta)} where hits moved."""
    out = {}
    for key, (hits, amount) in current.items():
        old_hits, old_amount = previous.get(key, (0, 0))
        if hits != old_hits or amount != old_amount:
            out[key] = (hits - old_hits, amount - old_amount)
    return out


def session_path(path: str, direct: bool) -> str:
    """The session's path name: O_DIRECT calls apart from buffered ones ("read_direct")."""
    return f"{path}_direct" if direct else path


class BufferMap:
    """Which dma-buf a traced memory object is: its own inode, or a udmabuf's memfd (inode, st_dev).

    A buffer stays known for KEPT_READS reads after the last one that showed it, so bytes
    moved into a buffer freed before the next read are still attributed to it: IoPathSource
    drains the ring before each read, and a record made between a drain and the read that
    no longer shows its buffer reaches the poll after that one. Then it is forgotten, so what
    is kept is bounded by the buffers alive over the last reads, not by every buffer ever
    made (under churn that grew by thousands a second).
    """

    KEPT_READS = 3

    def __init__(self):
        self._reads = 0
        self._dmabufs: Dict[int, int] = {}  # inode -> the read that last showed it
        self._by_memfd: Dict[Tuple[int, int], Tuple[int, int]] = {}  # (inode, dev) -> (dma-buf, read)

    def learn(self, buffers: Iterable):
        self._reads += 1
        read = self._reads
        for buffer in buffers:
            self._dmabufs[buffer.inode] = read
            if getattr(buffer, "backing_inode", 0):
                self._by_memfd[(buffer.backing_inode, buffer.backing_dev)] = (buffer.inode, read)
        oldest = read - self.KEPT_READS + 1
        self._dmabufs = {inode: seen for inode, seen in self._dmabufs.items() if seen >= oldest}
        self._by_memfd = {memfd: entry for memfd, entry in self._by_memfd.items() if entry[1] >= oldest}

    def __len__(self):
        return len(self._dmabufs) + len(self._by_memfd)

    def alive(self, kind: str, inode: int, dev: int) -> bool:
        """Shown by the latest read: a dma-buf, or the memfd behind a udmabuf."""
        if kind == "dmabuf":
            return self._reads > 0 and self._dmabufs.get(inode) == self._reads
        if kind == "shmem":
            return self._reads > 0 and self._by_memfd.get((inode, dev), (0, 0))[1] == self._reads
        return False

    def buffer_of(self, kind: str, inode: int, dev: int) -> int:
        """The dma-buf inode, or 0 when the object is not a known buffer."""
        if kind == "dmabuf" and inode in self._dmabufs:
            return inode
        if kind == "shmem":
            return self._by_memfd.get((inode, dev), (0, 0))[0]
        return 0


def path_samples(now_ns: int, target_deltas: Mapping, task_deltas: Mapping, buffers: BufferMap) -> List:
    """PathSample rows for one interval: per (buffer, path) from targets; "other" work per process."""
    by_row: Dict[Tuple[int, int, str], Counters] = {}
    for target, delta in target_deltas.items():
        key = (buffers.buffer_of(target.kind, target.inode, target.dev), 0, session_path(target.path, target.direct))
        by_row[key] = by_row[key] + delta if key in by_row else delta
    for (tgid, path), delta in task_deltas.items():
        if path == "other":  # never in the per-target counters: no syscall, no target
            by_row[(0, tgid, path)] = delta
    return [records.PathSample(now_ns, inode, tgid, path, c.bytes, c.cpu_copied, c.pinned_pages, c.pc_added,
                               c.calls, c.errors)
            for (inode, tgid, path), c in sorted(by_row.items())]


def latency_buckets(target_deltas: Mapping) -> List:
    """LatencyBucket rows (deltas, they add up) per path from the per-target log2 histograms."""
    counts: Dict[Tuple[str, int], int] = {}
    for target, delta in target_deltas.items():
        path = session_path(target.path, target.direct)
        for bucket, count in enumerate(delta.latency_hist):
            if count:
                counts[(path, bucket)] = counts.get((path, bucket), 0) + count
    return [records.LatencyBucket(path, bucket, count) for (path, bucket), count in sorted(counts.items())]


def stack_count_rows(stack_deltas: Mapping) -> List:
    """StackCount rows from {(stack id, tracer point, path): (hits, amount)} deltas."""
    return [records.StackCount(stack_id, STACK_POINTS.get(point, point), path, hits, amount)
            for (stack_id, point, path), (hits, amount) in sorted(stack_deltas.items()) if hits or amount]


def clean_frames(frames: List[str], hooked: Mapping[str, str]) -> List[str]:
    """Leaf-first kernel frames with the tracer's own frames replaced by the function it hooks.

    A stack taken in an fexit program starts "bpf_prog_<tag>_<program>", "bpf_trampoline_<id>":
    they stand in for the traced function (filemap_read...), so that is what the leaf shows.
    hooked: {program name: kernel function it is attached to}. See dmabuf_top.stacks.
    """
    return kernel_frames(frames, hooked)


def io_event(record, buffers: BufferMap):
    """An iopaths.IoRecord as a session IoEvent."""
    return records.IoEvent(
        time_ns=record.timestamp_ns, duration_ns=record.latency_ns, tgid=record.tgid, tid=record.tid,
        comm=record.comm, path=session_path(record.path, record.direct),
        inode=buffers.buffer_of(record.kind, record.inode, record.dev),
        bytes=max(record.ret, 0), errno=-record.ret if record.ret < 0 else 0, stack_id=-1,
        cpu_copied_bytes=record.cpu_copied, pinned_pages=record.pinned_pages)


def lifecycle_event(record):
    return records.LifecycleEvent(record.timestamp_ns, record.inode, record.event, record.tgid, record.comm,
                                  record.size, record.fd)


def hook_rows(statuses) -> List:
    """hooks.HookState list -> session Hooks (name: the program; detail: what it hooks and why not)."""
    rows = []
    for status in statuses:
        detail = status.target if status.live else f"{status.target}: {status.why}"
        rows.append(records.Hook(status.program, status.concern, status.state, status.via or "", detail))
    return rows


# ---------------------------------------------------------------------------------------------
# The I/O path and lifecycle source


class IoPathSource:
    """Per-path counters, per-event records, stacks, latency and lifecycle events from one Tracer."""

    name = "iopaths"

    def __init__(self, report=None, tracer_factory=None, iterator_factory=None):
        self._report = report
        self._tracer_factory = tracer_factory
        self._iterator_factory = iterator_factory
        self._tracer = None
        self._iterator = None
        self._buffers = BufferMap()
        self._previous = None
        self._dropped = 0
        self._map_full = {}
        self._stacks_written = set()

    def start(self, context):
        try:
            if self._tracer_factory is None:
                from .probes.tracer import Tracer

                self._tracer_factory = lambda pid: Tracer(pid=pid, record=True, stacks=True, report=self._report,
                                                          follow_children=True)
            self._tracer = self._tracer_factory(context.target_pid)
        except DmabufTopError as error:
            return [records.Hook("iopaths", "tracing", State.MISSING, "", f"I/O path tracing off: {error}")]
        hooks = hook_rows(self._tracer.hooks)
        # Read /proc/kallsyms now, before the command runs: in a poll it would stall the cadence
        # (seconds on a slow machine).
        self._tracer.kallsyms()
        try:
            if self._iterator_factory is None:
                from .probes.dmabuf_iter import DmabufIterator

                self._iterator_factory = DmabufIterator
            self._iterator = self._iterator_factory()
        except DmabufTopError as error:
            hooks.append(records.Hook("iopaths/buffers", "attribution", State.MISSING, "",
                                      f"I/O is not attributed to buffers (inode 0): {error}"))
        self._previous = _empty_snapshot()
        return hooks

    def _learn_buffers(self):
        if self._iterator is not None:
            self._buffers.learn(self._iterator.read())

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
        self._learn_buffers()  # after the drain: every buffer the drained records can name exists or existed
        snapshot = self._tracer.snapshot(minimal=True)
        rows = []
        for event in events:
            rows.append(io_event(event, self._buffers) if isinstance(event, IoRecord) else lifecycle_event(event))
        targets = counter_deltas(snapshot.by_target, self._previous.by_target)
        tasks = counter_deltas(snapshot.by_task, self._previous.by_task)
        rows += path_samples(now_ns, targets, tasks, self._buffers)
        rows += latency_buckets(targets)
        stacks = amount_deltas(snapshot.stacks, self._previous.stacks)
        rows += self._new_stacks(stacks)
        rows += stack_count_rows(stacks)
        if snapshot.dropped > self._dropped:
            rows.append(records.Drop(now_ns, RING_DROPS, snapshot.dropped - self._dropped))
            self._dropped = snapshot.dropped
        rows += self._map_full_drops(now_ns, getattr(snapshot, "map_full", {}))
        self._forget_gone(snapshot)
        self._previous = snapshot
        return rows

    def _map_full_drops(self, now_ns, map_full):
        # The rows come from snapshot(minimal=True): a key its maps refused is missing from them.
        from .trace_model import MINIMAL_MAPS

        rows = []
        for name in MINIMAL_MAPS:
            refused = map_full.get(name, 0)
            if refused > self._map_full.get(name, 0):
                rows.append(records.Drop(now_ns, f"{name} map full", refused - self._map_full.get(name, 0)))
                self._map_full[name] = refused
        return rows

    def _forget_gone(self, snapshot):
        """Delete from the kernel maps the counters of buffers gone (trace_model.forget_gone: the rule is
        shared with the live view and the exporter)."""
        from .trace_model import forget_gone

        forget_gone(self._tracer, snapshot, self._previous.by_target, self._buffers.alive)

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
            for resource in (self._tracer, self._iterator):
                if resource is not None:
                    resource.close()
            self._tracer = self._iterator = None


def _empty_snapshot():
    from types import SimpleNamespace

    return SimpleNamespace(by_target={}, by_task={}, stacks={}, dropped=0)


# ---------------------------------------------------------------------------------------------
# Taskstats of the traced command and its descendants


def descendants(root: int, parents: Mapping[int, int]) -> List[int]:
    """root and every process whose ancestry (pid -> ppid) leads to it, sorted."""
    children: Dict[int, List[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def parse_ppid(stat_line: str) -> int:
    """The ppid field of /proc/PID/stat (the comm in parentheses may hold spaces and ')')."""
    return int(stat_line.rsplit(")", 1)[1].split()[1])


def read_parents(proc="/proc") -> Dict[int, int]:
    parents = {}
    for entry in os.listdir(proc):
        if entry.isdigit():
            try:
                with open(f"{proc}/{entry}/stat") as stat:
                    parents[int(entry)] = parse_ppid(stat.read())
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile
    return parents


def taskstats_sample(now_ns: int, tgid: int, stats):
    """A taskstats.TaskStats (summed over the thread group) as a TaskstatsSample; absent fields are 0."""
    def delay(kind):
        found = stats.delays.get(kind)
        return found.total_ns if found else 0

    return records.TaskstatsSample(now_ns, tgid, stats.pid or tgid, stats.comm, 0, delay("cpu"), delay("blkio"),
                                   delay("swapin"), delay("freepages"), stats.read_bytes or 0,
                                   stats.write_bytes or 0)


class TaskstatsSource:
    """Delay accounting (cumulative) of the traced command and its descendants, every interval."""

    name = "taskstats"

    def __init__(self, client_factory=None, parents=read_parents):
        self._client_factory = client_factory
        self._parents = parents
        self._client = None
        self._root = None
        self._resources = ExitStack()

    def start(self, context):
        if context.target_pid is None:
            return [records.Hook("taskstats", "taskstats", State.NOT_NEEDED, "",
                                 "taskstats follow a traced command: record -- CMD")]
        try:
            from .taskstats import TaskStatsClient, delay_accounting

            accounting = self._resources.enter_context(delay_accounting())
            self._client = (self._client_factory or TaskStatsClient)()
            self._resources.callback(self._client.close)
        except DmabufTopError as error:
            self._resources.close()
            return [records.Hook("taskstats", "taskstats", State.MISSING, "", f"taskstats off: {error}")]
        self._root = context.target_pid
        detail = "delay accounting on" if accounting else \
            "delay accounting could not be turned on: only CPU delay is counted"
        return [records.Hook("taskstats", "taskstats", State.LIVE, "netlink", detail)]

    def poll(self, now_ns):
        if self._client is None:
            return []
        rows = []
        for tgid in descendants(self._root, self._parents()):
            stats = self._client.for_process(tgid)
            if stats is not None:
                rows.append(taskstats_sample(now_ns, tgid, stats))
        return rows

    def stop(self, now_ns):
        try:
            return self.poll(now_ns)
        finally:
            self._client = None
            self._resources.close()


def all_sources(report=None) -> List:
    """Every source `record` runs, in start order."""
    from .recorder import BufferSnapshots

    return [BufferSnapshots(), IoPathSource(report=report), TaskstatsSource()]
