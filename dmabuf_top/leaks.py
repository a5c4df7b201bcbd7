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

The lifecycle probe's seam: `creations`, {inode: Creation}, given to both observe() and report()
(leak_creations.CreationFeed fills it live). Without the probe it is empty and everything above still holds,
with creators "not known" and groups by exporter + size + name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

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
        self.observations = 0

    def observe(self, inventory, now_ns: int, creations: Mapping[int, Creation] = None) -> None:
        creations = creations or {}
        first = self._first_ns is None
        if first:
            self._first_ns = now_ns
        inodes, sizes, keys = _inodes_sizes_keys(inventory, creations)
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

    def report(self, inventory, now_ns: int, min_age_s: float, creations: Mapping[int, Creation] = None,
               alive: Callable[[int], bool] = pid_alive, probe_loaded: bool = False,
               hold_events: Optional[Mapping[int, Sequence[HoldEvent]]] = None) -> LeakReport:
        """The buffers of `inventory` (the last one observed) alive at least min_age_s, grouped, largest first.
        probe_loaded: `creations` come from the lifecycle probe (even when empty: nothing created since it started).
        hold_events: {inode: its last HoldEvents} from the probe; None when its get/put hooks are missing."""
        creations = creations or {}
        comms = {process.pid: process.comm for process in inventory.processes}
        groups: Dict[Tuple, Tuple[Optional[Tuple[str, ...]], List[LeakBuffer]]] = {}
        first_ns = self._first_ns if self._first_ns is not None else now_ns
        for entry in inventory.buffers:
            buffer = entry.buffer
            creation = creations.get(buffer.inode)
            preexisting = buffer.inode in self._preexisting
            if creation is not None:
                age_ns, age_known = now_ns - creation.created_ns, True
            else:
                age_ns = now_ns - self._first_seen.get(buffer.inode, now_ns)
                age_known = not preexisting
            if age_ns < min_age_s * 1e9:
                continue
            if creation is None:
                state = NOT_KNOWN
            else:
                state = RUNNING if alive(creation.pid) else EXITED
            fds = tuple(Holder(pid, comms.get(pid, b""), refs.fds) for pid, refs in sorted(entry.holders.items())
                        if refs.fds)
            maps = tuple(Holder(pid, comms.get(pid, b""), refs.maps) for pid, refs in sorted(entry.holders.items())
                         if refs.maps)
            kernel_holds: Tuple[str, ...] = ()
            last_events: Optional[Tuple[HoldEvent, ...]] = ()
            if not entry.holders:
                kernel_holds = tuple(buffer.attached_devices) or (KERNEL_REFERENCE,)
                last_events = None if hold_events is None else tuple(hold_events.get(buffer.inode, ()))
            leak = LeakBuffer(buffer.inode, buffer.size, buffer.exporter, buffer.name, age_ns / 1e9, age_known,
                              preexisting, creation, state, fds, maps, kernel_holds, last_events)
            stack, key = group_key(buffer, creation)
            groups.setdefault(key, (stack, []))[1].append(leak)
        out = []
        for key, (stack, buffers) in groups.items():
            buffers.sort(key=lambda leak: (-leak.age_s, leak.inode))
            series = [((t - first_ns) / 1e9, *counts.get(key, (0, 0))) for t, counts in self._history]
            out.append(LeakGroup(stack, key, buffers, series))
        out.sort(key=lambda group: (-group.bytes, -group.count, repr(group.key)))
        notes = ()
        if not creations and not probe_loaded:
            notes = ("no creation records (the lifecycle probe is not loaded here): ages count from when this tool "
                     "first saw each buffer, creators are not known, groups are by exporter + size + name",)
        return LeakReport((now_ns - first_ns) / 1e9, min_age_s, self.observations, out,
                          bool(creations) or probe_loaded, notes, hold_events is not None, now_ns)
