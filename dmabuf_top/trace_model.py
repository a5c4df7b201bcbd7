"""The trace snapshot model, kernel-free: what a Tracer read at one instant, and the rules that read it.

    snap.per_path()["read"].cpu_copied     # summed over processes
    snap.untraced_fields()                 # counters whose hooks are missing: shown as NOT_TRACED, never 0
    BufferIndex.per_buffer(snap.by_target)  # per dma-buf: inventory/index.py (targets -> buffers)

The Tracer that fills it is probes/tracer.py; the hooks it carries are probes/hooks.HookState.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .probes import iopaths
from .probes.hooks import HookState, missing_concerns
from .probes.iopaths import Counters

# What a cell shows for a counter whose hooks are missing: not traced, which is not 0. Every view uses it.
NOT_TRACED = "n/t"
# The concern whose hooks fill a counter: when it is missing the cell says NOT_TRACED instead of 0.
COLUMN_CONCERNS = {"cpu_copied": "cpu_copy", "pinned_pages": "gup", "got_pages": "gup", "gup_calls": "gup",
                   "pc_added": "page_cache",
                   "pc_removed": "page_cache"}


@dataclass
class TraceSnapshot:
    by_target: Dict[iopaths.Target, Counters]
    by_task: Dict[Tuple[int, str], Counters]
    outcomes: Dict[iopaths.Outcome, dict]
    pagecache: Dict[Tuple[int, int], Tuple[int, int]]  # (inode, st_dev) -> (pages added, removed)
    lifecycle: Dict[Tuple[int, str], Tuple[int, int]]  # (dma-buf inode, event) -> (count, size)
    stacks: Dict[Tuple[int, str, str], Tuple[int, int]]  # (stack id, point, path) -> (hits, amount)
    dropped: int
    hooks: List[HookState] = field(default_factory=list)
    map_full: Dict[str, int] = field(default_factory=dict)  # map name -> new keys refused (Tracer.map_full)

    def per_path(self, tgid=None):
        """{path: Counters} summed over processes (or for one)."""
        totals = {}
        for (task, path), counters in self.by_task.items():
            if tgid is None or task == tgid:
                totals[path] = totals.get(path, Counters()) + counters
        return totals

    def missing_concerns(self):
        return missing_concerns(self.hooks)

    def untraced_fields(self):
        missing = missing_concerns(self.hooks)
        return {name for name, concern in COLUMN_CONCERNS.items() if concern in missing}

    def to_dict(self):
        untraced = self.untraced_fields()
        out = {
            "paths": {path: c.to_dict(untraced) for path, c in sorted(self.per_path().items())},
            "processes": [{"tgid": tgid, "path": path, **c.to_dict(untraced)}
                          for (tgid, path), c in sorted(self.by_task.items())],
            "targets": [{"inode": t.inode, "dev": t.dev, "path": t.path, "kind": t.kind, "direct": t.direct,
                         **c.to_dict(untraced)} for t, c in self.by_target.items()],
            "outcomes": [{**o.__dict__, **v} for o, v in self.outcomes.items()],
            "page_cache": [{"inode": i, "dev": d, "added": a, "removed": r}
                           for (i, d), (a, r) in sorted(self.pagecache.items())],
            "lifecycle": [{"inode": i, "event": e, "count": c, "size": s}
                          for (i, e), (c, s) in sorted(self.lifecycle.items())],
            "dropped_events": self.dropped,
            "map_full": dict(self.map_full),
            "hooks": [h.to_dict() for h in self.hooks],
            "missing": missing_concerns(self.hooks),
        }
        return out


# The maps snapshot(minimal=True) reads (targets, tasks, stacks) and the tgid set behind them: a key one of
# them refused is I/O missing from what such a reader shows. The others (page cache per file,
# lifecycle) it never reads, so what they refuse loses nothing it shows.
MINIMAL_MAPS = ("io_by_target", "io_by_task", "stack_counts", "traced_tgids")


