"""The trace snapshot model, kernel-free: what a Tracer read at one instant, and the rules that read it.

    snap.per_path()["read"].cpu_copied     # summed over processes
    snap.untraced_fields()                 # counters whose hooks are missing: shown as NOT_TRACED, never 0
    per_buffer(snap, buffers)              # keyed by dma-buf inode (udmabufs through their memfd)

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

    def to_dict(self, buffers=None):
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
        if buffers is not None:
            out["buffers"] = {str(inode): {path: c.to_dict(untraced) for path, c in paths.items()}
                              for inode, paths in per_buffer(self, buffers).items()}
        return out


# Targets whose objects can be gone for good (a dma-buf freed, a memfd closed): their counters can be
# forgotten. Files on disk stay, and a reader cannot tell an idle file from a deleted one.
FORGETTABLE_KINDS = ("dmabuf", "shmem")
# The maps snapshot(minimal=True) reads (targets, tasks, stacks) and the tgid set behind them: a key one of
# them refused is I/O missing from what such a reader shows. The others (page cache per file,
# lifecycle) it never reads, so what they refuse loses nothing it shows.
MINIMAL_MAPS = ("io_by_target", "io_by_task", "stack_counts", "traced_tgids")


def gone_targets(by_target, previous_by_target, alive):
    """The targets of a snapshot whose counters a delta reader may forget (Tracer.forget): a dma-buf or
    shmem object that did nothing since the previous snapshot (its last delta is taken) and that the
    reader's latest buffer read no longer shows (alive(kind, inode, dev) is False). If it moves again,
    its key comes back from zero and the next delta counts it as new: nothing counted twice or lost."""
    return [target for target, counters in by_target.items()
            if target.kind in FORGETTABLE_KINDS and previous_by_target.get(target) == counters
            and not alive(target.kind, target.inode, target.dev)]


def forget_gone(tracer, snapshot, previous_by_target, alive):
    """Forget the gone targets (gone_targets) in the kernel and in `snapshot`, so that the snapshot is
    the next call's `previous_by_target`. Under churn the maps would otherwise fill with buffers that
    are gone and refuse new ones. Returns the targets forgotten."""
    gone = gone_targets(snapshot.by_target, previous_by_target, alive)
    if gone:
        tracer.forget(targets=gone)
        for target in gone:
            del snapshot.by_target[target]
    return gone


def per_buffer(snapshot, buffers):
    """{dma-buf inode: {path: Counters}}: a dma-buf mapping directly, a udmabuf through its memfd."""
    return per_buffer_of(snapshot, {b.inode for b in buffers},
                         {(b.backing_inode, b.backing_dev): b.inode for b in buffers if b.backing_inode})


def per_buffer_of(snapshot, dmabuf_inodes, by_memfd):
    """per_buffer for callers holding buffers as columns: `dmabuf_inodes` any container of inodes,
    `by_memfd` {(memfd inode, st_dev): udmabuf inode}."""
    out = {}
    for target, counters in snapshot.by_target.items():
        if target.kind == "dmabuf" and target.inode in dmabuf_inodes:
            inode = target.inode
        elif target.kind == "shmem" and (target.inode, target.dev) in by_memfd:
            inode = by_memfd[(target.inode, target.dev)]
        else:
            continue
        paths = out.setdefault(inode, {})
        paths[target.path] = paths.get(target.path, Counters()) + counters
    return out
