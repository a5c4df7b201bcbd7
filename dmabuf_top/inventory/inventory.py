"""The buffer inventory: every dma-buf, who holds it, what it costs (collect.py reads the sources).

Two questions, each answered by the best source the kernel offers:

  which buffers exist   "iterator"  iter/dmabuf (6.16+): exact, one kernel pass
                        "bufinfo"   debugfs dma_buf/bufinfo (text; root; debugfs)
                        "fdinfo"    /proc/*/fdinfo + /proc/*/maps: misses buffers
                                    only the kernel holds; mapped-only ones partial
  who holds them        "iterator"  iter/task_file + iter/task_vma: every fd and
                                    mapping of every process, one pass each
                        "procfs"    /proc/PID/fd, fdinfo and maps, as libdmabufinfo

`build_inventory` is the pure part (tested without a kernel): it joins buffers
and holders by inode and computes, as Android's dmabuf_dump does,

  per process   fd refs and map refs per buffer; RSS = sum of the sizes of the
                distinct buffers it references (by fd or mapping); PSS = sum of
                size // (number of processes referencing the buffer), integer
                division per buffer like dmabuf_dump
  per buffer    holders {pid: (fds, maps)}; kernel_refs = file references not
                explained by an fd or a mapping (in-flight fds, drivers)
  kernel-only   buffers no process references
  totals        all buffers, kernel-only, userspace RSS (sum of per-process
                RSS: shared buffers count once per process) and PSS

Refs to a buffer the inventory does not list (created or freed between the two
passes) are dropped and counted in `unmatched_refs`.

The join runs on arrays (numpy): at 10,000 buffers, an object per buffer and per
reference costs several times the kernel passes. Every number above is computed
there, exactly (integers throughout); the per-buffer objects (`Inventory.buffers`,
each with its holders) and each process's per-buffer refs are built on first use,
by the views and formats that show them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..probes.dmabuf_iter import BufferColumns
from ..probes.task_dmabufs import HolderColumns
from .types import ExporterTotal, Refs

log = logging.getLogger(__name__)

SOURCES = ("iterator", "bufinfo", "fdinfo")
HOLDER_SOURCES = ("iterator", "procfs")

SOURCE_DESCRIPTIONS = {
    "iterator": "iter/dmabuf",
    "bufinfo": "debugfs dma_buf/bufinfo",
    "fdinfo": "/proc/*/fdinfo and /proc/*/maps",
}
HOLDER_DESCRIPTIONS = {
    "iterator": "iter/task_file + iter/task_vma",
    "procfs": "/proc/*/fd, fdinfo and maps",
}


class BufferEntry:
    """One buffer and its holders {pid: Refs}. `buffer` is a types.Buffer; fields a
    source cannot know are None (exporter, file_refs and attachment_count from fdinfo).
    A plain class with slots: ten thousand are made when a view lists every buffer."""

    __slots__ = ("buffer", "holders")

    def __init__(self, buffer, holders=None):
        self.buffer = buffer
        self.holders = {} if holders is None else holders

    def __repr__(self):
        return f"BufferEntry({self.buffer!r}, holders={self.holders!r})"

    @property
    def inode(self):
        return self.buffer.inode

    @property
    def size(self):
        return self.buffer.size

    @property
    def fd_refs(self):
        return sum(refs.fds for refs in self.holders.values())

    @property
    def map_refs(self):
        return sum(refs.maps for refs in self.holders.values())

    @property
    def kernel_refs(self) -> Optional[int]:
        """File references held by neither an fd nor a mapping of a process we saw."""
        if self.buffer.file_refs is None:
            return None
        return max(self.buffer.file_refs - self.fd_refs - self.map_refs, 0)

    @property
    def kernel_only(self) -> bool:
        return not self.holders


def _built_on_first_use(value):
    """`value`, or the result of calling it if it is a function (the lazy parts of a snapshot)."""
    return value() if callable(value) else value


class ProcessEntry:
    """One process: its totals, and {inode: Refs} for every buffer it holds (`buffers` may be
    given as a function, called on first use)."""

    __slots__ = ("pid", "comm", "rss", "pss", "fd_refs", "map_refs", "_buffers")

    def __init__(self, pid: int, comm: bytes, buffers, rss: int, pss: int, fd_refs=None, map_refs=None):
        self.pid, self.comm, self.rss, self.pss = pid, comm, rss, pss
        self._buffers = buffers
        if fd_refs is None or map_refs is None:
            fd_refs = sum(refs.fds for refs in self.buffers.values())
            map_refs = sum(refs.maps for refs in self.buffers.values())
        self.fd_refs, self.map_refs = fd_refs, map_refs

    @property
    def buffers(self) -> Dict[int, Refs]:
        self._buffers = _built_on_first_use(self._buffers)
        return self._buffers

    def __repr__(self):
        return (f"ProcessEntry(pid={self.pid}, comm={self.comm!r}, rss={self.rss}, pss={self.pss}, "
                f"fd_refs={self.fd_refs}, map_refs={self.map_refs})")


@dataclass(frozen=True)
class Totals:
    buffers: int
    bytes: int
    kernel_only_buffers: int
    kernel_only_bytes: int
    userspace_rss: int
    userspace_pss: int


class InventoryArrays(NamedTuple):
    """The join's arrays, for views that work on columns rather than on one object per buffer (the
    live view at ten thousand buffers). One entry per (process, buffer) holding, sorted by pid then
    row; `pair_row` indexes `columns` (a probes.dmabuf_iter.BufferColumns, in the source's order)."""

    columns: object
    pair_pid: np.ndarray
    pair_row: np.ndarray
    pair_fds: np.ndarray
    pair_maps: np.ndarray

    def buffers_held(self, pid) -> int:
        """Distinct buffers `pid` holds: its pairs, one per buffer (no per-buffer dict built)."""
        return int(np.searchsorted(self.pair_pid, pid, "right") - np.searchsorted(self.pair_pid, pid, "left"))


class Inventory:
    """A snapshot. `buffers` (largest first, then by inode) may be given as a function, called on
    first use; `processes` are largest RSS first, then by pid. `arrays`: the join's InventoryArrays
    (None for a part made by only_process). `cgroups`: {pid: cgroup v2 path or None} of the holders,
    read by whoever took the snapshot (collect.py); None when nobody read them."""

    cgroups: Optional[Dict[int, Optional[bytes]]] = None

    def __init__(self, source: str, holders_source: str, buffers, processes: List[ProcessEntry],
                 exporters: List[ExporterTotal], totals: Totals, notes: Tuple[str, ...] = (), unmatched_refs: int = 0,
                 arrays: Optional[InventoryArrays] = None):
        self.source, self.holders_source = source, holders_source
        self._buffers = buffers
        self.processes, self.exporters, self.totals = processes, exporters, totals
        self.notes, self.unmatched_refs = tuple(notes), unmatched_refs
        self.arrays = arrays

    @property
    def buffers(self) -> List[BufferEntry]:
        self._buffers = _built_on_first_use(self._buffers)
        return self._buffers

    def buffer(self, inode) -> BufferEntry:
        return next(entry for entry in self.buffers if entry.inode == inode)

    def process(self, pid) -> ProcessEntry:
        return next(entry for entry in self.processes if entry.pid == pid)

    def only_process(self, pid) -> "Inventory":
        """The part of the inventory process `pid` holds (the totals stay system-wide)."""
        processes = [entry for entry in self.processes if entry.pid == pid]
        inodes = set(processes[0].buffers) if processes else set()
        buffers = [entry for entry in self.buffers if entry.inode in inodes]
        part = Inventory(self.source, self.holders_source, buffers, processes,
                         exporter_totals(b.buffer for b in buffers), self.totals, self.notes, self.unmatched_refs)
        part.cgroups = self.cgroups
        return part


def _ranked(tallies) -> List[ExporterTotal]:
    return sorted((ExporterTotal(name, count, size) for name, count, size in tallies),
                  key=lambda total: (-total.bytes, total.exporter or ""))


def exporter_totals(buffers) -> List[ExporterTotal]:
    """Count and bytes per exporter, largest total first (None: exporter unknown to the source)."""
    counts: Dict[Optional[str], List[int]] = {}
    for buffer in buffers:
        tally = counts.setdefault(buffer.exporter, [0, 0])
        tally[0] += 1
        tally[1] += buffer.size
    return _ranked((name, count, size) for name, (count, size) in counts.items())


def build_inventory(buffers, holders, source: str, holders_source: str, notes=()) -> Inventory:
    """Join buffers and holders by inode; pure.

    `buffers` is a probes.dmabuf_iter.BufferColumns or a sequence of Buffer;
    `holders` a probes.task_dmabufs.HolderColumns or Holders. Sequences are
    turned into columns first (the slow sources' path).
    """
    if not isinstance(buffers, BufferColumns):
        buffers = BufferColumns.from_buffers(buffers)
    if not isinstance(holders, HolderColumns):
        holders = HolderColumns.from_holders(holders)
    return _join(buffers, holders, source, holders_source, tuple(notes))


def stable_groups(keys):
    """(the distinct keys ascending, the index of each key's group), by a stable sort.

    np.unique(return_inverse=True) is not used: it argsorts with the default
    (quicksort) kind, whose SIMD path gives unsorted orders in the lab's TCG guest
    (numpy 2.4, X86_V3) from a few hundred elements on. The stable kind is correct
    there; every sort in the snapshot path uses it (tests/vm/test_snapshot_scale.py).
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.concatenate(([True], ordered[1:] != ordered[:-1])) if len(keys) else np.zeros(0, dtype=bool)
    inverse = np.empty(len(keys), dtype=np.intp)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


_PID_SHIFT = np.uint64(32)  # a (pid, buffer row) pair as one uint64: pid above, row below
_ROW_MASK = np.uint64(0xFFFFFFFF)


def _join(columns, holders, source, holders_source, notes) -> Inventory:
    count = len(columns)
    inode, size = columns.inode, columns.size

    # Each reference -> the row of its buffer, by binary search over the sorted inodes.
    by_inode = np.argsort(inode, kind="stable")
    sorted_inodes = inode[by_inode]
    pids = np.concatenate((holders.fd_pid, holders.map_pid)).astype(np.uint64)
    ref_inodes = np.concatenate((holders.fd_inode, holders.map_inode)).astype(np.uint64)
    is_fd = np.arange(len(pids)) < len(holders.fd_pid)
    if count:
        slot = np.minimum(np.searchsorted(sorted_inodes, ref_inodes), count - 1)
        matched = sorted_inodes[slot] == ref_inodes
    else:
        slot, matched = np.zeros(len(pids), dtype=np.intp), np.zeros(len(pids), dtype=bool)
    unmatched = int(len(pids) - np.count_nonzero(matched))
    rows = by_inode[slot[matched]].astype(np.uint64)
    pids, is_fd = pids[matched], is_fd[matched]

    # Sorted (pid, row) keys: the pairs come grouped by pid, rows ascending within a pid.
    pairs, pair_of_ref = stable_groups((pids << _PID_SHIFT) | rows)
    pair_pid = (pairs >> _PID_SHIFT).astype(np.int64)
    pair_row = (pairs & _ROW_MASK).astype(np.intp)
    pair_fds = np.bincount(pair_of_ref[is_fd], minlength=len(pairs))
    pair_maps = np.bincount(pair_of_ref[~is_fd], minlength=len(pairs))
    holder_count = np.bincount(pair_row, minlength=count).astype(np.uint64)
    pair_size = size[pair_row]
    pair_pss = pair_size // holder_count[pair_row] if len(pairs) else pair_size

    processes = []
    if len(pairs):
        starts = np.flatnonzero(np.concatenate(([True], pair_pid[1:] != pair_pid[:-1])))
        ends = np.append(starts[1:], len(pairs)).tolist()
        sums = [np.add.reduceat(values, starts).tolist() for values in (pair_size, pair_pss, pair_fds, pair_maps)]
        for pid, start, end, rss, pss, fds, maps in zip(pair_pid[starts].tolist(), starts.tolist(), ends, *sums):
            processes.append(ProcessEntry(pid, holders.comms.get(pid, b""),
                                          _refs_of_process(inode, pair_row, pair_fds, pair_maps, start, end),
                                          rss, pss, fds, maps))
        processes.sort(key=lambda entry: (-entry.rss, entry.pid))

    kernel_only = holder_count == 0
    totals = Totals(
        buffers=count,
        bytes=int(size.sum()),
        kernel_only_buffers=int(np.count_nonzero(kernel_only)),
        kernel_only_bytes=int(size[kernel_only].sum()),
        userspace_rss=sum(entry.rss for entry in processes),
        userspace_pss=sum(entry.pss for entry in processes),
    )
    by_exporter = ((name, columns.exporter_code == code) for code, name in enumerate(columns.exporters))
    exporters = _ranked((name, int(np.count_nonzero(mask)), int(size[mask].sum()))
                        for name, mask in by_exporter if mask.any())
    if unmatched:
        log.info("%d references to buffers created or freed between the passes were dropped", unmatched)

    def buffer_entries():
        holders_of: Dict[int, Dict[int, Refs]] = {}
        for pid, row, fds, maps in zip(pair_pid.tolist(), pair_row.tolist(), pair_fds.tolist(), pair_maps.tolist()):
            held = holders_of.get(row)
            if held is None:
                held = holders_of[row] = {}
            held[pid] = Refs(fds, maps)  # pids ascending, as the pairs are sorted
        order = np.lexsort((inode, ~size)).tolist()  # largest first, then by inode
        return [BufferEntry(buffer, holders_of.get(row, {})) for buffer, row in zip(columns.pick(order), order)]

    return Inventory(source, holders_source, buffer_entries, processes, exporters, totals, notes, unmatched,
                     InventoryArrays(columns, pair_pid, pair_row, pair_fds, pair_maps))


def _refs_of_process(inode, pair_row, pair_fds, pair_maps, start, end):
    """A function making {inode: Refs} of one process's pairs [start, end), for ProcessEntry."""
    def build():
        return dict(zip(inode[pair_row[start:end]].tolist(),
                        map(Refs, pair_fds[start:end].tolist(), pair_maps[start:end].tolist())))
    return build
