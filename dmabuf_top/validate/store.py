"""A validate run into a session file, so `dmabuf-top report` can compare the methods.

The run's rows go into metadata key `validate` (JSON: what ValidateRun.to_dict() gives),
and the session spans the run, not the writing of the file: metadata started_ns is the
first method's start, ended_ns the last method's end, `kernel` the kernel it ran on.
No schema change: a reader without validate support ignores the key. Per method:

- its per-path counters become path_samples (inode = the method's buffer). validate keeps
  a method's totals over its I/O window, not a time series, so each total is spread evenly
  over that window in steps of 1/SPREAD_STEPS of the run (1 ms at least): the report's
  throughput bins (1/100 of the session) then show each method's average rate where it
  ran, within 1 %, and the sums stay exact.
  Calls and errors go to the window's last sample, when they had returned.
- its per-path latency histograms (log2 of microseconds, from the kernel) become
  latency_hist rows, summed per path over the methods;
- its dma-bufs, as the kernel listed them after allocating, after the I/O and after the
  close, become buffer_snapshots (a memfd method has no dma-buf, so no row), and the times
  of those passes metadata `inventory_passes_ns` (the pass after the close found none: the
  buffers-over-time figure drops to zero there instead of holding the last value);
- its evidence stacks go into stacks/stack_counts (so the flame graph shows them).
The tracer's hooks go into hooks.
"""
import os
import sys
from typing import Dict, Tuple

from ..recording import session as records

SPREAD_STEPS = 10_000
MIN_STEP_NS = 1_000_000


def run_span(run) -> Tuple[int, int]:
    """(first method's start, last method's end) in CLOCK_MONOTONIC ns, (0, 0) when no method ran."""
    ran = [result for result in run.results if result.started_ns]
    if not ran:
        return 0, 0
    return min(r.started_ns for r in ran), max(r.closed_ns or r.ended_ns for r in ran)


def spread(value, steps):
    """value split into `steps` integer parts that add up to it exactly."""
    return [value * (index + 1) // steps - value * index // steps for index in range(steps)]


def spread_samples(result, tgid, step_ns):
    """PathSamples of one method: its per-path totals spread evenly over its I/O window, a sample per step_ns."""
    start, end = result.io_started_ns or result.ended_ns, result.ended_ns
    steps = max(1, (end - start) // max(MIN_STEP_NS, step_ns))
    times = [start + (end - start) * (index + 1) // steps for index in range(steps)]
    samples = []
    for path, counters in result.paths.items():
        columns = [spread(counters[name] or 0, steps) for name in ("bytes", "cpu_copied", "pinned_pages", "pc_added")]
        for index, time_ns in enumerate(times):
            last = index == steps - 1
            samples.append(records.PathSample(
                time_ns, result.buffer_inode, tgid, path, *(column[index] for column in columns),
                calls=counters["calls"] if last else 0, errors=counters["errors"] if last else 0))
    return samples


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
        writer.set_metadata(argv=list(sys.argv), command=run.command, validate=run.to_dict())
        if run.kernel:
            writer.set_metadata(kernel=run.kernel)
        if started_ns:
            writer.set_metadata(started_ns=started_ns)
        writer.set_metadata(inventory_passes_ns=sorted(t for result in run.results for t in result.inventory_passes))
        if report is not None:
            writer.set_features(report)
        for hook in run.hooks:
            writer.add(records.Hook(hook.program, hook.live, hook.via or "", "" if hook.live else hook.reason))
        for stack_id, frames in run.stacks.items():
            writer.add(records.Stack(stack_id, "\n".join(frames)))
        for result in run.results:
            for stack in result.evidence:
                writer.add(records.StackCount(stack["stack_id"], stack["point"], stack["path"], stack["hits"],
                                              stack["amount"]))
            writer.add_all(spread_samples(result, tgid, (ended_ns - started_ns) // SPREAD_STEPS))
            writer.add_all(result.snapshots)
        writer.add_all(latency_rows(run))
        writer.close("completed", ended_ns=ended_ns or None)
    return path
