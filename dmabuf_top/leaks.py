"""Leak hunting on the inventory: which dma-bufs stay alive, since when, who made them, who keeps them. Pure.

`LeakTracker.observe(inventory, now_ns)` is called once per interval with a fresh inventory
(inventory/collect.py); `report(...)` lists the buffers alive for at least `min_age_s`, grouped:

  group     by allocation stack when the creation was seen (a Creation with a stack), else by
            exporter + size + name (what a leak loop repeats)
  age       from the creation time when known (Creation.created_ns), else from when this tool first
            saw the buffer; a buffer already there at the first observation existed before the tool
            started: its age is "at least" the time since then, and it has no stack (it says so)
  growth    each group's count and bytes at every observation, and the change since the first
  creator   pid/comm from the Creation, "exited" when that process is gone; "not known" without one
  holders   by fd and by mapping (pid, comm, how many); a buffer no process holds says what holds it:
            the devices attached to it, else "kernel reference" (an fd in flight, a driver's get), and its
            last get/put/attach/detach events (who, when) where the lifecycle probe sees them (`hold_events`;
            None: those hooks are missing here, said as such, never as "no events")

The ages, groups and growth are decided once, over arrays, by `columns(...)` (LeakColumns: no object per
buffer); report() makes its objects from them, and the live view's Leaks pane reads them as they are.

The lifecycle probe's seam: `creations`, {inode: Creation}, given to both observe() and report()
(leak_creations.CreationFeed fills it live). Without the probe it is empty and everything above still holds,
with creators "not known" and groups by exporter + size + name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import repeat
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

NOT_KNOWN, EXITED, RUNNING = "not known", "exited", "running"
KERNEL_REFERENCE = "kernel reference"


@dataclass(frozen=True)
class Creation:
    """A buffer's creation as the lifecycle probe saw it. created_ns: CLOCK_MONOTONIC (bpf_ktime_get_ns, as
    time.monotonic_ns); cgroup: the creator's cgroup v2 path (raw bytes, None: not read); stack: the
    allocation stack's frames, innermost first (kernel then user), None when none was taken; kernel_frames: how
    many of them are the kernel's (None: not said)."""

    inode: int
    pid: int
    comm: str
    created_ns: int
    tid: int = 0
    cgroup: Optional[bytes] = None
    stack: Optional[Tuple[str, ...]] = None
    kernel_frames: Optional[int] = None

    @property
    def user_stack(self) -> Tuple[str, ...]:
        """The user frames of the stack, innermost first (all of it when the split is not known)."""
        return tuple(self.stack or ())[self.kernel_frames or 0:]


@dataclass(frozen=True)
class HoldEvent:
    """A reference taken or dropped by the kernel on a buffer's behalf: event "get", "put" (dma_buf_get/put),
    "attach" or "detach" (a device); pid/comm: the task that did it; at_ns: CLOCK_MONOTONIC."""

    event: str
    pid: int
    comm: str
    at_ns: int


HOLD_EVENTS = frozenset({"get", "put", "attach", "detach"})


@dataclass(frozen=True)
class Holder:
    pid: int
    comm: bytes
    count: int  # fds, or mappings


@dataclass(frozen=True)
class LeakBuffer:
    inode: int
    size: int
    exporter: Optional[str]
    name: Optional[bytes]
    age_s: float  # at least this old (exact when age_known)
    age_known: bool  # False: it existed before the tool started (age counts from then)
    preexisting: bool
    creator: Optional[Creation]
    creator_state: str  # running, exited, not known
    fd_holders: Tuple[Holder, ...]
    map_holders: Tuple[Holder, ...]
    kernel_holds: Tuple[str, ...]  # for a buffer no process holds: attached devices, or "kernel reference"
    # For a buffer no process holds: its last hold events, oldest first (None: not seen here, the hooks are
    # missing); () for a buffer a process holds.
    last_events: Optional[Tuple[HoldEvent, ...]] = ()


@dataclass(frozen=True)
class LeakGroup:
    """stack: the allocation stack (None: not known); otherwise key = (exporter, size, name)."""

    stack: Optional[Tuple[str, ...]]
    key: Tuple
    buffers: List[LeakBuffer]
    series: List[Tuple[float, int, int]]  # (seconds since the first observation, buffers, bytes) per observation

    @property
    def count(self) -> int:
        return len(self.buffers)

    @property
    def bytes(self) -> int:
        return sum(buffer.size for buffer in self.buffers)

    @property
    def growth(self) -> Tuple[int, int]:
        """(buffers, bytes) of the whole group now minus at the first observation."""
        if not self.series:
            return 0, 0
        return self.series[-1][1] - self.series[0][1], self.series[-1][2] - self.series[0][2]


@dataclass(frozen=True)
class LeakReport:
    elapsed_s: float  # since the first observation
    min_age_s: float
    observations: int
    groups: List[LeakGroup]
    creations_known: bool
    notes: Tuple[str, ...] = field(default_factory=tuple)
    hold_events_known: bool = False  # the get/put/attach/detach hooks are live (last_events are what happened)
    now_ns: int = 0  # when the report was made (CLOCK_MONOTONIC): the hold events' ages count from it

    @property
    def buffers(self) -> int:
        return sum(group.count for group in self.groups)

    @property
    def bytes(self) -> int:
        return sum(group.bytes for group in self.groups)


@dataclass(frozen=True)
class LeakColumns:
    """The buffers of one observed inventory alive at least min_age_s, grouped, as arrays (one entry per buffer, no
    object per buffer): what report() makes its LeakGroups of, and what the live view's Leaks pane
    (live/leak_rows.py) reads directly, building text only for the groups it shows. Ten thousand buffers in a few
    array passes: an object per buffer and a series per group every refresh cost the pane seconds.

    The entries are ordered by group, then oldest first (ties by inode): group g is the run
    starts[g]:ends[g], its oldest buffer at starts[g]; groups in the order their keys first appear."""

    position: np.ndarray  # each buffer's row in the inventory's columns (its entries' index without them)
    inode: np.ndarray  # uint64
    size: np.ndarray  # int64
    age_ns: np.ndarray  # int64: from the creation when known, else from when first observed
    age_known: np.ndarray  # bool: False for a buffer there before the tool started (age_ns is a lower bound)
    preexisting: np.ndarray  # bool
    creator_pid: np.ndarray  # int64, -1 without a Creation
    starts: np.ndarray  # intp, per group
    keys: List[Tuple]  # per group: leaks.group_key's key
    creations: Mapping[int, Creation]
    first_counts: Mapping[Tuple, Tuple[int, int]]  # {group key: (buffers, bytes)} at the first observation
    last_counts: Mapping[Tuple, Tuple[int, int]]  # and at the last

    @property
    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:], len(self.inode)).astype(np.intp)

    def __len__(self):
        return len(self.keys)

    def stack(self, group) -> Optional[Tuple[str, ...]]:
        """The group's allocation stack (None: grouped by exporter + size + name)."""
        key = self.keys[group]
        return tuple(key[1:]) if key[0] == "stack" else None

    def growth(self, group) -> Tuple[int, int]:
        """The whole group's (buffers, bytes) at the last observation minus at the first (LeakGroup.growth)."""
        key = self.keys[group]
        then, now = self.first_counts.get(key, (0, 0)), self.last_counts.get(key, (0, 0))
        return now[0] - then[0], now[1] - then[1]


def creator_cgroups(creations: Optional[Mapping[int, Creation]]) -> Optional[Dict[int, Optional[bytes]]]:
    """{inode: creator's cgroup path} for inventory/cgroup_totals (None: creators not known at all)."""
    if creations is None:
        return None
    return {inode: creation.cgroup for inode, creation in creations.items()}


def pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _key(exporter, size, name, creation: Optional[Creation]):
    if creation is not None and creation.stack:
        return creation.stack, ("stack",) + tuple(creation.stack)
    return None, ("buffer", exporter or "", size, name)


def group_key(buffer, creation: Optional[Creation]):
    """(stack or None, key): the allocation stack when known, else exporter + size + name."""
    return _key(buffer.exporter, buffer.size, buffer.name, creation)


def _inodes_sizes_keys(inventory, creations: Mapping[int, Creation]):
    """([inode], [size], [group key]) of every buffer: from the inventory's columns when it has them (no object
    per buffer: the live view observes ten thousand buffers every second), else from its entries."""
    arrays = inventory.arrays
    if arrays is None:
        buffers = [entry.buffer for entry in inventory.buffers]
        return ([b.inode for b in buffers], [b.size for b in buffers],
                [group_key(b, creations.get(b.inode))[1] for b in buffers])
    columns = arrays.columns
    exporters = [exporter or "" for exporter in columns.exporters]
    inodes, sizes = columns.inode.tolist(), columns.size.tolist()
    keys = [("buffer", exporters[code], size, name)  # _key without a creation, for each row
            for code, size, name in zip(columns.exporter_code.tolist(), sizes, columns.names())]
    for row, inode in enumerate(inodes) if creations else ():
        creation = creations.get(inode)
        if creation is not None and creation.stack:
            keys[row] = _key(None, None, None, creation)[1]
    return inodes, sizes, keys


# The observations a group's growth series keeps: the first, then the latest ones (a view open for days).
SERIES_KEPT = 120


class LeakTracker:
    def __init__(self):
        self._first_ns: Optional[int] = None
        self._first_seen: Dict[int, int] = {}  # inode -> when first observed
        self._preexisting: set = set()
        self._history: List[Tuple[int, Dict[Tuple, Tuple[int, int]]]] = []  # (ns, {group key: (count, bytes)})
        self._observed = None  # (inventory, creations, its rows): what columns() of the same inventory reuses
        self.observations = 0

    def observe(self, inventory, now_ns: int, creations: Mapping[int, Creation] = None) -> None:
        given = creations
        creations = creations or {}
        first = self._first_ns is None
        if first:
            self._first_ns = now_ns
        inodes, sizes, keys = rows = _inodes_sizes_keys(inventory, creations)
        self._observed = (inventory, given, rows)
        alive = set(inodes)
        first_seen = self._first_seen
        for inode in alive - first_seen.keys():
            first_seen[inode] = now_ns
            if first and inode not in creations:
                self._preexisting.add(inode)
        per_group: Dict[Tuple, Tuple[int, int]] = {}
        for key, size in zip(keys, sizes):
            count, total = per_group.get(key, (0, 0))
            per_group[key] = (count + 1, total + size)
        # Forget the buffers gone: an inode the kernel reuses later is a new buffer.
        for inode in first_seen.keys() - alive:
            del first_seen[inode]
            self._preexisting.discard(inode)
        self._history.append((now_ns, per_group))
        if len(self._history) > SERIES_KEPT:
            del self._history[1]  # the first stays: growth counts from it
        self.observations += 1

    def _rows(self, inventory, creations):
        """([inode], [size], [group key]) of `inventory`: the ones observe() made when it was the last observed
        with these creations (the same objects: both callers pass what they observed), else made again."""
        observed = self._observed
        if observed is not None and observed[0] is inventory and observed[1] is creations:
            return observed[2]
        return _inodes_sizes_keys(inventory, creations or {})

    def columns(self, inventory, now_ns: int, min_age_s: float,
                creations: Mapping[int, Creation] = None) -> LeakColumns:
        """The buffers of `inventory` (the last one observed) alive at least min_age_s, grouped (LeakColumns): the
        rules of ages, groups and growth, in array passes and one dictionary look-up or two per buffer."""
        inodes, sizes, keys = self._rows(inventory, creations)
        creations = creations or {}
        count = len(inodes)
        first_seen, preexisting_set = self._first_seen, self._preexisting
        seen = np.fromiter(map(first_seen.get, inodes, repeat(now_ns, count)), dtype=np.int64, count=count)
        preexisting = np.zeros(count, dtype=bool)
        if preexisting_set:
            preexisting = np.fromiter(map(preexisting_set.__contains__, inodes), dtype=bool, count=count)
        created, creator_pid = np.zeros(count, dtype=np.int64), np.full(count, -1, dtype=np.int64)
        has_creation = np.zeros(count, dtype=bool)
        for row, inode in enumerate(inodes) if creations else ():
            creation = creations.get(inode)
            if creation is not None:
                created[row], creator_pid[row], has_creation[row] = creation.created_ns, creation.pid, True
        age_ns = np.where(has_creation, now_ns - created, now_ns - seen)
        kept = np.flatnonzero(~(age_ns < min_age_s * 1e9))
        kept_keys = [keys[row] for row in kept.tolist()]
        numbering: Dict[Tuple, int] = dict.fromkeys(kept_keys)  # in order of first appearance
        for number, key in enumerate(numbering):
            numbering[key] = number
        group = np.fromiter(map(numbering.__getitem__, kept_keys), dtype=np.intp, count=len(kept))
        inode = np.asarray(inodes, dtype=np.uint64)[kept]
        order = np.lexsort((inode, -age_ns[kept], group))  # by group, oldest first, ties by inode
        kept, group = kept[order], group[order]
        starts = np.flatnonzero(np.diff(group, prepend=-1)).astype(np.intp)
        group_keys = list(numbering)  # numbered in order of first appearance: group ids ascend with the runs
        return LeakColumns(
            position=kept, inode=inode[order], size=np.asarray(sizes, dtype=np.int64)[kept], age_ns=age_ns[kept],
            age_known=(has_creation | ~preexisting)[kept], preexisting=preexisting[kept],
            creator_pid=creator_pid[kept], starts=starts, keys=group_keys, creations=creations,
            first_counts=self._history[0][1] if self._history else {},
            last_counts=self._history[-1][1] if self._history else {})

    def report(self, inventory, now_ns: int, min_age_s: float, creations: Mapping[int, Creation] = None,
               alive: Callable[[int], bool] = pid_alive, probe_loaded: bool = False,
               hold_events: Optional[Mapping[int, Sequence[HoldEvent]]] = None) -> LeakReport:
        """The buffers of `inventory` (the last one observed) alive at least min_age_s, grouped, largest first.
        probe_loaded: `creations` come from the lifecycle probe (even when empty: nothing created since it started).
        hold_events: {inode: its last HoldEvents} from the probe; None when its get/put hooks are missing."""
        table = self.columns(inventory, now_ns, min_age_s, creations)
        creations = creations or {}
        comms = {process.pid: process.comm for process in inventory.processes}
        entries = inventory.buffers
        if inventory.arrays is not None:  # positions are rows of the columns: find each entry by inode
            by_inode = {entry.buffer.inode: entry for entry in entries}
            entries = [by_inode[inode] for inode in table.inode.tolist()]
        else:
            entries = [entries[position] for position in table.position.tolist()]
        first_ns = self._first_ns if self._first_ns is not None else now_ns
        leaks = [_leak_buffer(entry, age_ns / 1e9, age_known, preexisting, creations.get(entry.buffer.inode), alive,
                              comms, hold_events)
                 for entry, age_ns, age_known, preexisting in zip(entries, table.age_ns.tolist(),
                                                                  table.age_known.tolist(), table.preexisting.tolist())]
        out = []
        for group, (key, start, end) in enumerate(zip(table.keys, table.starts.tolist(), table.ends.tolist())):
            stack = table.stack(group)
            series = [((t - first_ns) / 1e9, *counts.get(key, (0, 0))) for t, counts in self._history]
            out.append(LeakGroup(stack, key, leaks[start:end], series))
        out.sort(key=lambda group: (-group.bytes, -group.count, repr(group.key)))
        notes = ()
        if not creations and not probe_loaded:
            notes = ("no creation records (the lifecycle probe is not loaded here): ages count from when this tool "
                     "first saw each buffer, creators are not known, groups are by exporter + size + name",)
        return LeakReport((now_ns - first_ns) / 1e9, min_age_s, self.observations, out,
                          bool(creations) or probe_loaded, notes, hold_events is not None, now_ns)


def _leak_buffer(entry, age_s, age_known, preexisting, creation, alive, comms, hold_events) -> LeakBuffer:
    """One buffer of a report, with its creator's state and its holders (the kernel's, when no process holds it)."""
    buffer = entry.buffer
    state = NOT_KNOWN if creation is None else RUNNING if alive(creation.pid) else EXITED
    fds = tuple(Holder(pid, comms.get(pid, b""), refs.fds) for pid, refs in sorted(entry.holders.items()) if refs.fds)
    maps = tuple(Holder(pid, comms.get(pid, b""), refs.maps) for pid, refs in sorted(entry.holders.items())
                 if refs.maps)
    kernel_holds: Tuple[str, ...] = ()
    last_events: Optional[Tuple[HoldEvent, ...]] = ()
    if not entry.holders:
        kernel_holds = tuple(buffer.attached_devices) or (KERNEL_REFERENCE,)
        last_events = None if hold_events is None else tuple(hold_events.get(buffer.inode, ()))
    return LeakBuffer(buffer.inode, buffer.size, buffer.exporter, buffer.name, age_s, age_known, preexisting,
                      creation, state, fds, maps, kernel_holds, last_events)
