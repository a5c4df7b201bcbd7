"""A validate run into a session file, so `dmabuf-top report` can compare the methods.

The session spans the run, not the writing of the file: metadata started_ns is the first
method's start, ended_ns the last method's end (closed_ns), `kernel` the kernel it ran on,
`command` and exit_code the traced command's (validate -- CMD). What was measured, and nothing
else (docs/session-schema.md):

- each method is a `methods` row (times, totals, DMA evidence, checksum, verdict) and its calls `method_flows` rows;
- its per-path counters are path_samples rows at the end of its I/O window (io_ended_ns), inode =
  the method's buffer: one row per path whose interval is that window. validate measures totals over
  the window, not a time series; the report draws them at the method's average rate across it;
- its per-path latency histograms (log2 of microseconds, from the kernel) become latency_hist rows,
  summed per path over the methods;
- its dma-bufs, as the kernel listed them after allocating, after the I/O and after the close, become
  buffer_snapshots (a memfd method has no dma-buf, so no row), and the times of those passes metadata
  `inventory_passes_ns` (the pass after the close found none: the buffers-over-time figure drops to
  zero there instead of holding the last value);
- its evidence stacks go into stacks/stack_counts (so the flame graph shows them).
The tracer's hooks go into hooks. metadata `per_call_events` is false: validate keeps no io_events.
"""
import os
import sys
from typing import Dict, Tuple

from ..recording import session as records


def run_span(run) -> Tuple[int, int]:
    """(first method's start, last method's end) in CLOCK_MONOTONIC ns, (0, 0) when no method ran."""
    ran = [result for result in run.results if result.started_ns]
    if not ran:
        return 0, 0
    return min(r.started_ns for r in ran), max(r.closed_ns or r.ended_ns for r in ran)


def method_row(result, run):
    """The methods row of one MethodResult."""
    source, verdict = run.source, result.verdict
    return records.Method(
        result.name, result.summary, result.buffer, result.direct, source and source.path,
        source and source.filesystem, "warm" if run.warm else "dropped", result.payload, result.buffer_inode,
        result.started_ns, result.io_started_ns, result.ended_ns, result.closed_ns, result.alloc_ms, result.io_ms,
        result.close_ms, result.moved, result.reached, result.cpu_copied, result.page_cache_pages,
        result.pinned_pages, result.got_pages, result.syscalls, result.errors, result.errno, result.checksum,
        verdict.kind, verdict.label, verdict.copies, "\n".join(verdict.reasons), "\n".join(result.notes),
        result.device_bytes, result.device_to_buffer)


def flow_rows(result):
    return [records.MethodFlow(result.name, f["path"], f["src_kind"], f["dst_kind"], f["src_fs"], f["dst_fs"],
                               f["bytes"], f["calls"], f["error"]) for f in result.flows]


def path_samples(result, tgid):
    """One PathSample per path the method used: its totals over its I/O window, at the window's end."""
    return [records.PathSample(result.ended_ns, result.buffer_inode, tgid, path, c["bytes"] or 0,
                               c["cpu_copied"] or 0, c["pinned_pages"] or 0, c["pc_added"] or 0, c["calls"] or 0,
                               c["errors"] or 0)
            for path, c in result.paths.items()]


def latency_rows(run):
    """LatencyBuckets of every method's paths, summed per (path, bucket)."""
    counts: Dict[Tuple[str, int], int] = {}
    for result in run.results:
        for path, counters in result.paths.items():
            for bucket, count in enumerate(counters.get("latency_hist_us_log2") or ()):
                if count:
                    counts[(path, bucket)] = counts.get((path, bucket), 0) + count
    return [records.LatencyBucket(path, bucket, count) for (path, bucket), count in sorted(counts.items())]


def record_run(run, path, report=None, overwrite=False):
    started_ns, ended_ns = run_span(run)
    tgid = os.getpid() if run.command is None else 0
    with records.SessionWriter(path, overwrite=overwrite) as writer:
        writer.set_metadata(argv=list(sys.argv), command=run.command, per_call_events=False)
        if run.kernel:
            writer.set_metadata(kernel=run.kernel)
        if started_ns:
            writer.set_metadata(started_ns=started_ns)
        writer.set_metadata(inventory_passes_ns=sorted(t for result in run.results for t in result.inventory_passes))
        if report is not None:
            writer.set_features(report)
        for hook in run.hooks:
            writer.add(records.Hook(hook.program, hook.concern, hook.state, hook.via or "",
                                    "" if hook.live else hook.why))
        for stack_id, frames in run.stacks.items():
            writer.add(records.Stack(stack_id, "\n".join(frames)))
        for result in run.results:
            writer.add(method_row(result, run))
            writer.add_all(flow_rows(result))
            for stack in result.evidence:
                writer.add(records.StackCount(stack["stack_id"], stack["point"], stack["path"], stack["hits"],
                                              stack["amount"]))
            writer.add_all(path_samples(result, tgid))
            writer.add_all(result.snapshots)
        writer.add_all(latency_rows(run))
        writer.close("completed", exit_code=run.command_exit, ended_ns=ended_ns or None)
    return path
