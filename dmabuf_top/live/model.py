"""The live view's model: samples in, frames of rows with rates out. Pure: no kernel, no terminal.

A `sampler.Sample` is what the sampler read at one instant (an inventory, a trace
snapshot, taskstats per process); `LiveModel.update(sample)` turns successive
samples into a `Frame`: one list of `Row`s per pane (columns.py), with per-second
rates from counter deltas over the measured elapsed time (live/rates.py) and the
buffers that appeared or vanished since the previous sample marked. Per-buffer I/O
comes from the buffer index (inventory.index) that learnt the sample's inventory.
A value the kernel does not keep for one row reads "n/a" (a process older than the
moment the view turned delay accounting on has no block-I/O, swap-in or reclaim
delays: its row's extra["delays_na"] says why).

The Leaks pane and the cgroups' created bytes come from the sample's `creations` (the lifecycle probe's, followed
by the sampler): a leaks.LeakTracker observes every sample, so ages and growth count from the view's start, and
a buffer already there at the first sample is "before start". Like the Cgroups pane it is system-wide, even with -p.
Its rows are made only when read (Rows: the pane shown, or -C --pane leaks), and then as live/leak_rows.LeakTable:
text only for the groups shown.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..inventory.cgroup_totals import cgroup_totals
from ..inventory.index import BufferIndex
from ..inventory.inventory import InventoryArrays
from ..inventory.types import ExporterTotal
from ..leaks import LeakTracker, creator_cgroups
from ..probes.dmabuf_iter import BufferColumns
from ..probes.hooks import State
from ..sampler import Sample
from ..taskstats import KEPT_FOR_EVERY_TASK, DelayAccounting
from ..text import terminal_safe
from ..trace_model import MINIMAL_MAPS
from .buffer_table import BufferTable, NameCache
from .columns import (
    ASYNC_PATHS,
    COLUMNS,
    DELAYS,
    IO_COLUMNS,
    IO_PATHS,
    NOT_TRACED,
    PANES,
    XFER_PATHS,
    Row,
    exporter_search_text,
)
from .leak_rows import KeyTexts, LeakTable
from .rates import RateTracker

# Counter fields that get a rate (per path); everything on screen and in JSON is derived from these.
RATE_FIELDS = ("calls", "bytes", "cpu_copied", "pinned_pages", "pc_added", "latency_ns")


@dataclass
class Frame:
    wall: float
    elapsed: Optional[float]  # measured seconds since the previous sample (None: first sample)
    interval: float
    kernel: str
    source: str
    holders_source: str
    totals: object  # inventory.Totals
    exporters: list  # inventory.ExporterTotal
    rows: Dict[str, List[Row]]
    live_concerns: List[str]
    missing: Dict[str, str]  # concern -> why it is not traced
    dropped: Optional[int]
    cannot_see: List[str]  # sentences for the header
    notes: List[str]
    pid: Optional[int] = None
    sequence: int = 0
    absent: Dict[str, str] = field(default_factory=dict)  # path -> why this kernel has no such path
    tracing_pending: bool = False  # the I/O hooks are still loading: rates read "-", nothing is "missing" yet
    # {map: new keys it refused} for the maps the view's counters come from (trace_model.MINIMAL_MAPS): what
    # those keys carried is missing from the rates. None without a trace snapshot.
    map_full: Optional[Dict[str, int]] = None

    def not_traced(self, pane) -> set:
        """Column keys of `pane` that read n/t in this frame."""
        return {c.key for c in COLUMNS[pane] if c.concerns and all(k in self.missing for k in c.concerns)}


class Rows(dict):
    """A frame's rows by pane; a pane given in `later` as a function is made on its first read."""

    def __init__(self, rows, later):
        super().__init__(rows)
        self._later = dict(later)

    def __missing__(self, pane):
        make = self._later.pop(pane, None)
        if make is None:
            raise KeyError(pane)
        rows = self[pane] = make()
        return rows


# ---------------------------------------------------------------------------
# Counters -> rates


def _flatten(paths: Mapping[str, object]) -> Dict[str, int]:
    """{path: Counters} -> {"path.field": value} for the rate fields."""
    flat = {}
    for path, counters in paths.items():
        for name in RATE_FIELDS:
            flat[f"{path}.{name}"] = getattr(counters, name)
    return flat


_NO_RATE = dict.fromkeys(IO_COLUMNS)
_ZERO_RATE = dict.fromkeys(IO_COLUMNS, 0.0)


def _io_values(rates: Optional[Mapping[str, float]], first: bool, has_counters: bool) -> Dict[str, Optional[float]]:
    """The five I/O columns from one entity's rates. None when there is no honest rate: the first
    sample, or counters that went backwards; 0 for an entity that never did traced I/O.
    (Shared constant dicts for the common no-I/O cases: ten thousand idle buffers cost nothing.)"""
    if first or (rates is None and has_counters):
        return _NO_RATE
    if not rates:
        return _ZERO_RATE

    def total(paths, name):
        return sum(rates.get(f"{path}.{name}", 0.0) for path in paths)

    return {
        "read": total(("read",), "bytes"),
        "write": total(("write",), "bytes"),
        "xfer": total(XFER_PATHS, "bytes"),
        "async": total(ASYNC_PATHS, "bytes"),
        "copy": total(IO_PATHS, "cpu_copied"),
        "pin": total(IO_PATHS, "pinned_pages"),
    }


def _path_rates(rates: Optional[Mapping[str, float]]) -> Optional[Dict[str, Dict[str, float]]]:
    """Per-path rates for JSON: {path: {field/s}} (None when there is no rate yet)."""
    if rates is None:
        return None
    out = {}
    for name, value in rates.items():
        path, counter = name.split(".", 1)
        out.setdefault(path, {})[counter] = value
    return out


class LiveModel:
    """Turns successive Samples into Frames. Holds the rate trackers and the previous buffer table."""

    def __init__(self, interval: float, kernel: str = "", cannot_see: Sequence[str] = (), pid: Optional[int] = None,
                 min_age: float = 1.0):
        """min_age: the Leaks pane lists buffers alive at least this many seconds."""
        self.interval = interval
        self.min_age = min_age
        self._leaks = LeakTracker()
        self._leaks_lock = threading.Lock()  # observed by the collector thread, reported by the drawing loop
        self._leak_keys = KeyTexts()  # the Leaks pane's group keys as text, kept across refreshes
        self.kernel = kernel
        self.cannot_see = list(cannot_see)
        self.pid = pid
        self._trackers = {pane: RateTracker() for pane in PANES}
        self._delays = RateTracker()
        self._previous_table = None
        self._previous_time: Optional[float] = None
        self._sequence = 0
        self._names = NameCache()  # escaped names kept across refreshes
        self._traced = False  # the previous sample had a trace snapshot

    def baseline(self, sample: Sample) -> None:
        """Start the counters without producing a numbered frame (batch mode's silent first sample)."""
        self.update(sample)
        self._sequence -= 1

    def update(self, sample: Sample) -> Frame:
        inventory = sample.inventory
        arrays = inventory.arrays if inventory.arrays is not None else _arrays_of(inventory)
        selection, processes = self._selected(inventory, arrays)
        trace = sample.trace
        pending = trace is None and sample.tracing_pending
        if pending:
            missing = {}
        elif trace is None:
            missing = {"tracing": "I/O tracing could not start"}
            for concern in (*IO_PATHS, "cpu_copy", "gup", "page_cache"):
                missing[concern] = "I/O tracing could not start"
        else:
            missing = dict(trace.missing_concerns())
        if not sample.delayacct:
            missing["delayacct"] = "delay accounting is off (kernel.task_delayacct could not be set)"
        live = sorted({h.concern for h in trace.hooks if h.live}) if trace is not None else []
        absent = absent_paths(trace.hooks, missing) if trace is not None else {}
        elapsed = None if self._previous_time is None else sample.monotonic - self._previous_time
        self._previous_time = sample.monotonic
        self._sequence += 1

        comms = {p.pid: terminal_safe(p.comm) for p in inventory.processes}
        columns = arrays.columns
        inodes = columns.inode[selection]
        buffer_io = {}
        if trace is not None:
            index = sample.index if sample.index is not None else BufferIndex.of_inventory(inventory)
            buffer_io = index.per_buffer(trace.by_target, alive_only=True)
            if self.pid is not None:  # only the buffers the process holds
                shown = _SortedSet(inodes)
                buffer_io = {inode: paths for inode, paths in buffer_io.items() if inode in shown}
        # No rate before the second sample, nor while the hooks load, nor on the first traced sample.
        first = elapsed is None or trace is None and pending or (trace is not None and not self._traced)
        self._traced = trace is not None
        rows = Rows({
            "buffers": self._buffer_table(sample.monotonic, arrays, selection, buffer_io, comms, first),
            "processes": self._process_rows(sample, processes, arrays, trace, comms, first),
            "exporters": self._exporter_rows(sample.monotonic, arrays, selection, buffer_io, first),
            "paths": self._path_rows(sample.monotonic, trace, missing, absent, pending, first),
            "cgroups": _cgroup_rows(inventory, sample.creations),
        }, {"leaks": self._observe_leaks(sample, arrays)})
        if self.pid is None:
            exporters = list(inventory.exporters)
        else:
            exporters = [ExporterTotal(row.key, row.values["buffers"], row.values["bytes"])
                         for row in rows["exporters"]]
        return Frame(
            wall=sample.wall, elapsed=elapsed, interval=self.interval, kernel=self.kernel,
            source=inventory.source, holders_source=inventory.holders_source, totals=inventory.totals,
            exporters=exporters, rows=rows, live_concerns=live, missing=missing,
            dropped=trace.dropped if trace is not None else None,
            cannot_see=self.cannot_see + [s for s in sample.cannot_see if s not in self.cannot_see],
            notes=list(inventory.notes), pid=self.pid, sequence=self._sequence, absent=absent,
            tracing_pending=pending, map_full=_map_full(trace),
        )

    def _selected(self, inventory, arrays):
        """(rows of the inventory's columns shown, processes shown): all, or what -p PID holds."""
        if self.pid is None:
            return np.arange(len(arrays.columns)), list(inventory.processes)
        mine = arrays.pair_pid == self.pid
        # one pair per (pid, row), rows ascending within a pid: already sorted and distinct
        return arrays.pair_row[mine].astype(np.intp), [p for p in inventory.processes if p.pid == self.pid]

    def _observe_leaks(self, sample, arrays):
        """Observe the sample now (ages and growth need every one); returns the function making its pane.
        arrays: the inventory's (made from its entries when it has none: the order leaks.LeakColumns follows)."""
        now_ns = int(sample.monotonic * 1e9)  # time.monotonic: the clock of the creations (bpf_ktime_get_ns)
        creations = sample.creations
        with self._leaks_lock:
            self._leaks.observe(sample.inventory, now_ns, creations)

        def rows() -> LeakTable:
            with self._leaks_lock:
                table = self._leaks.columns(sample.inventory, now_ns, self.min_age, creations)
            return LeakTable(table, arrays, {process.pid: process.comm for process in sample.inventory.processes},
                             key_texts=self._leak_keys)

        return rows

    def _buffer_table(self, now, arrays, selection, buffer_io, comms, first):
        samples = {inode: _flatten(paths) for inode, paths in buffer_io.items()}
        rates = self._trackers["buffers"].update(now, samples)
        inodes = arrays.columns.inode[selection]
        blank = np.nan if first else 0.0  # an untouched buffer moved 0 bytes; before a rate, nothing is known
        io = {column: np.full(len(selection), blank) for column in IO_COLUMNS}
        path_rates = {}
        where = _SortedSet(inodes)
        for inode in samples:
            row = where.position(inode)
            rate = rates.get(inode)
            for column, value in _io_values(rate, first, True).items():
                io[column][row] = np.nan if value is None else value
            path_rates[inode] = None if rate is None else _path_rates(rate)
        previous = self._previous_table
        if previous is None:
            new = np.zeros(len(selection), dtype=bool)
            freed = []
        else:
            new = ~_SortedSet(previous.inode).contains(inodes)
            gone = np.flatnonzero(~_SortedSet(inodes).contains(previous.inode))
            freed = [Row(old.key, {**old.values, **dict.fromkeys(IO_COLUMNS)}, old.extra, "freed", old.search)
                     for old in previous.rows(gone)]
        labels = {pid: f"{pid}({comm})" for pid, comm in comms.items()}
        table = BufferTable(arrays, selection, io, new, path_rates, labels, self._names, freed)
        table.inherit_text(previous)
        self._previous_table = table
        return table

    def _process_rows(self, sample, processes, arrays, trace, comms, first) -> List[Row]:
        by_pid: Dict[int, Dict[str, object]] = {}
        if trace is not None:
            for (tgid, path), counters in trace.by_task.items():
                by_pid.setdefault(tgid, {})[path] = counters
        if self.pid is not None:
            by_pid = {pid: paths for pid, paths in by_pid.items() if pid == self.pid}
        samples = {pid: _flatten(paths) for pid, paths in by_pid.items()}
        rates = self._trackers["processes"].update(sample.monotonic, samples)
        accounting = sample.delayacct if isinstance(sample.delayacct, DelayAccounting) else \
            DelayAccounting(bool(sample.delayacct))
        not_kept = {pid: accounting.why_not_kept(stats.started) for pid, stats in sample.taskstats.items()
                    if stats is not None}
        delay_samples = {}
        for pid, stats in sample.taskstats.items():
            if stats is not None and not not_kept[pid]:
                delay_samples[pid] = {column: stats.delays[kind].total_ns
                                      for column, kind in DELAYS.items() if kind in stats.delays}
        delay_rates = self._delays.update(sample.monotonic, delay_samples)
        held = {p.pid: p for p in processes}
        pids = list(held) + [pid for pid in by_pid if pid not in held]
        if self.pid is not None and self.pid not in pids:
            pids.append(self.pid)
        for pid in sample.taskstats:
            if pid not in pids and (self.pid is None or pid == self.pid):
                pids.append(pid)
        rows = []
        for pid in pids:
            process = held.get(pid)
            stats = sample.taskstats.get(pid)
            comm = comms.get(pid) or (terminal_safe(stats.comm) if stats is not None else "?")
            delays = delay_rates.get(pid, {})
            values = {
                "pid": pid, "comm": comm,
                "buffers": arrays.buffers_held(pid) if process else 0,
                "rss": process.rss if process else 0,
                "pss": process.pss if process else 0,
                "fds": process.fd_refs if process else 0,
                "maps": process.map_refs if process else 0,
                **_io_values(rates.get(pid), first, pid in samples),
                # ns of waiting per second of wall time, as a share of the interval (iotop's IO>)
                **{column: (delays[column] / 1e7 if column in delays else None) for column in DELAYS},
            }
            why_na = not_kept.get(pid)
            extra = {
                "comm_raw": process.comm if process else (stats.comm.encode() if stats is not None else None),
                "paths": None if first else _path_rates(rates.get(pid)),
                # the kernel's totals; without the kinds it did not keep for this process (their 0 means nothing)
                "delays": None if stats is None else {kind: {"count": d.count, "total_ns": d.total_ns}
                                                      for kind, d in stats.delays.items()
                                                      if not why_na or kind in KEPT_FOR_EVERY_TASK},
                "delays_na": why_na,
            }
            rows.append(Row(pid, values, extra, None, f"{pid} {comm}".lower()))
        return rows

    def _exporter_rows(self, now, arrays, selection, buffer_io, first) -> List[Row]:
        columns = arrays.columns
        codes = columns.exporter_code[selection]
        where = _SortedSet(columns.inode[selection])
        sums: Dict[Optional[str], Dict[str, int]] = {}
        for inode, paths in buffer_io.items():
            flat = sums.setdefault(columns.exporters[codes[where.position(inode)]], {})
            for name, value in _flatten(paths).items():
                flat[name] = flat.get(name, 0) + value
        rates = self._trackers["exporters"].update(now, sums)
        sizes = columns.size[selection]
        totals = []
        for code, name in enumerate(columns.exporters):
            mine = codes == code
            if mine.any():
                totals.append((name, int(np.count_nonzero(mine)), int(sizes[mine].sum())))
        totals.sort(key=lambda total: (-total[2], total[0] or ""))  # as inventory.exporters: largest first
        rows = []
        for name, count, size in totals:
            values = {"exporter": name or "?", "buffers": count, "bytes": size,
                      **_io_values(rates.get(name), first, name in sums)}
            rows.append(Row(name, values, {"paths": None if first else _path_rates(rates.get(name))}, None,
                            exporter_search_text(name).lower()))
        return rows

    def _path_rates_values(self, path, rates):
        if rates is None:
            return dict.fromkeys(PATH_RATE_KEYS)
        calls = rates.get(f"{path}.calls", 0.0)
        return {
            "calls": calls,
            "bytes": rates.get(f"{path}.bytes", 0.0),
            "copy": rates.get(f"{path}.cpu_copied", 0.0),
            "pin": rates.get(f"{path}.pinned_pages", 0.0),
            "pc_added": rates.get(f"{path}.pc_added", 0.0),
            "latency": rates.get(f"{path}.latency_ns", 0.0) / calls / 1000 if calls else None,
        }

    def _path_rows(self, now, trace, missing, absent, pending, first) -> List[Row]:
        per_path = trace.per_path() if trace is not None else {}
        flat = {"all": _flatten(per_path)}
        rates = self._trackers["paths"].update(now, flat).get("all")
        rows = []
        for path in IO_PATHS:
            untraced = set()
            if pending:
                status = "starting: the I/O hooks are loading"
            elif path in missing:
                status, untraced = f"{NOT_TRACED}: {missing[path]}", set(PATH_RATE_KEYS)
            elif path in absent:
                status, untraced = f"absent: {absent[path]}", set(PATH_RATE_KEYS)
            else:
                gaps = [c for c in ("cpu_copy", "gup", "page_cache") if c in missing]
                status = "traced" + (f" (no {', '.join(gaps)})" if gaps else "")
            counters = per_path.get(path)
            values = {"path": path, **self._path_rates_values(path, None if untraced or first else rates),
                      "status": status}
            extra = {"counters": None if counters is None else {n: getattr(counters, n) for n in RATE_FIELDS},
                     "untraced": untraced}
            rows.append(Row(path, values, extra, None, path))
        return rows


PATH_RATE_KEYS = ("calls", "bytes", "copy", "pin", "pc_added", "latency")


def _cgroup_rows(inventory, creations=None) -> List[Row]:
    """One row per cgroup of the holders, then "unknown cgroup" and "kernel-only" (system-wide, even with -p:
    a cgroup's total is what its processes hold). created is None ("not known") without the lifecycle probe."""
    rows = []
    for total in cgroup_totals(inventory, inventory.cgroups or {}, creator_cgroups(creations)).rows:
        path = "" if total.path is None else terminal_safe(total.path)
        short = terminal_safe(total.short)
        values = {"cgroup": short, "processes": total.processes, "buffers": total.buffers,
                  "held": total.held_bytes, "shared": total.shared_bytes, "created": total.created_bytes,
                  "cgroup_path": path}
        rows.append(Row(path or short, values, {"kind": total.kind, "path_raw": total.path}, None,
                        f"{short} {path}".lower()))
    return rows


def _map_full(trace) -> Optional[Dict[str, int]]:
    """The refusals of the maps the view reads; the others (page cache per file, lifecycle) it never shows."""
    if trace is None:
        return None
    return {name: int(trace.map_full.get(name, 0)) for name in MINIMAL_MAPS}


def absent_paths(hooks, missing) -> Dict[str, str]:
    """{path: why} for the I/O paths with no live hook that are not missing either: the kernel has no
    such path (rw_file on an unpatched kernel: its hooks are 'not needed'), or nothing was planned for
    it. Their rates are unknown, not 0."""
    live = {h.concern for h in hooks if h.live}
    reasons = {}
    for hook in hooks:
        if hook.state is State.NOT_NEEDED:
            reasons.setdefault(hook.concern, f"{hook.target}: {hook.why}")
    return {path: reasons.get(path, "no hook for this path") for path in IO_PATHS
            if path not in live and path not in missing}


class _SortedSet:
    """Membership and position in an array of distinct inodes, by binary search (no set of ten thousand ints)."""

    def __init__(self, values):
        self._order = np.argsort(values, kind="stable")
        self._sorted = np.asarray(values)[self._order]

    def _slots(self, values):
        slots = np.searchsorted(self._sorted, values)
        return np.minimum(slots, max(len(self._sorted) - 1, 0))

    def contains(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=self._sorted.dtype)
        if not len(self._sorted):
            return np.zeros(len(values), dtype=bool)
        return self._sorted[self._slots(values)] == values

    def __contains__(self, value) -> bool:
        return bool(self.contains([value])[0])

    def position(self, value) -> int:
        """The index of `value` in the original array (it must be there)."""
        return int(self._order[self._slots(np.asarray([value], dtype=self._sorted.dtype))[0]])


def _arrays_of(inventory):
    """InventoryArrays for an inventory made without them (built from its objects: small inventories only)."""
    entries = inventory.buffers
    columns = BufferColumns.from_buffers([entry.buffer for entry in entries])
    pairs = sorted((pid, row, refs) for row, entry in enumerate(entries) for pid, refs in entry.holders.items())
    return InventoryArrays(columns, np.array([p for p, _, _ in pairs], dtype=np.int64),
                           np.array([r for _, r, _ in pairs], dtype=np.intp),
                           np.array([refs.fds for _, _, refs in pairs], dtype=np.int64),
                           np.array([refs.maps for _, _, refs in pairs], dtype=np.int64))


def now_wall():
    return time.time()
