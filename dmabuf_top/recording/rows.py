"""What a recording writes, from what the tracer read: pure functions, tested without a kernel.

- PathSample: the delta of the cumulative in-kernel counters since the previous poll, one row per
  (buffer, path) from the per-target counters (tgid 0), plus one row per process for work seen outside
  a traced syscall (path "other", inode 0). The rows partition the counters, so any column summed over
  rows is the total; per-process detail of the traced calls is in io_events (which carry the tgid). A
  target is a buffer's inode when the buffer index (inventory.index) knows it, else inode 0. O_DIRECT
  calls get their own path name ("read_direct"), so the zero-copy picture separates them from buffered ones.
- LatencyBucket: the deltas of the per-target log2 histograms, per path.
- IoEvent and LifecycleEvent: the ring buffer's per-event records.
- StackCount, Hook: the tracer's stack counts and hook states as session rows.
"""
from typing import Dict, List, Mapping, Tuple

from ..inventory.index import BufferIndex
from ..probes.iopaths import Counters
from ..stacks import kernel_frames
from . import session as records

# The tracer's stack points, by the names the session schema uses.
STACK_POINTS = {"cpu_copy_read": "copy_read", "cpu_copy_write": "copy_write", "gup": "gup"}


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


def path_samples(now_ns: int, target_deltas: Mapping, task_deltas: Mapping, buffers: BufferIndex) -> List:
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


def io_event(record, buffers: BufferIndex):
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
