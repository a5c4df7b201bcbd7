"""CgroupSource: dma-buf bytes per cgroup of the holders, every snapshot interval of a recording.

The buffers come from the tick's iter/dmabuf read (the BufferFeed every source shares: no second
pass); the holders from the task iterators (iter/task_file + iter/task_vma), one pass each per
interval; the cgroups from /proc/PID/cgroup. The rows are inventory/cgroup_totals.py's, one
CgroupSample per cgroup (and the "unknown" and "kernel-only" rows) per interval.
"""
from typing import Callable, List, Optional

from ..errors import DmabufTopError
from ..inventory.cgroup_totals import cgroup_totals
from ..inventory.cgroups import read_cgroups
from ..inventory.index import BufferFeed
from ..inventory.inventory import build_inventory
from ..probes.hooks import State
from ..probes.task_dmabufs import TaskDmabufIterator
from . import session as records


def cgroup_samples(now_ns: int, inventory, cgroup_of) -> List:
    """CgroupSample rows for one inventory (pure)."""
    return [records.CgroupSample(now_ns, row.kind, row.path, row.processes, row.buffers, row.held_bytes,
                                 row.shared_bytes) for row in cgroup_totals(inventory, cgroup_of).rows]


class CgroupSource:
    """Per-cgroup totals every `interval_s` and once at the end; polled after the buffer snapshots."""

    name = "cgroups"

    def __init__(self, feed: BufferFeed, holders_factory: Optional[Callable] = None, read_cgroup_paths=read_cgroups):
        self._feed = feed
        self._holders_factory = holders_factory or TaskDmabufIterator
        self._read_cgroups = read_cgroup_paths
        self._holders = None
        self._feeding = False
        self._interval_ns = 0
        self._last_ns = None

    def start(self, context):
        self._interval_ns = int(context.interval_s * 1e9)
        try:
            self._feed.open()
            self._feeding = True
            self._holders = self._holders_factory()
        except DmabufTopError as error:
            self._close()
            return [records.Hook("cgroups", "cgroups", State.MISSING, "", f"per-cgroup totals off: {error}")]
        return [records.Hook("cgroups", "cgroups", State.LIVE, "iter/task_file + iter/task_vma",
                             "per-cgroup totals of the holders, every snapshot interval")]

    def _sample(self, now_ns):
        self._last_ns = now_ns
        inventory = build_inventory(self._feed.read(now_ns), self._holders.read_columns(), "iterator", "iterator")
        return cgroup_samples(now_ns, inventory, self._read_cgroups(process.pid for process in inventory.processes))

    def poll(self, now_ns):
        if self._holders is None or (self._last_ns is not None and now_ns - self._last_ns < self._interval_ns):
            return []
        return self._sample(now_ns)

    def stop(self, now_ns):
        try:
            return self._sample(now_ns) if self._holders is not None else []
        finally:
            self._close()

    def _close(self):
        if self._holders is not None:
            self._holders.close()
            self._holders = None
        if self._feeding:
            self._feed.close()
            self._feeding = False
