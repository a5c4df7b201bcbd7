"""The buffer inventory: every dma-buf, who holds it, what it costs.

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
"""
from __future__ import annotations

import logging
from collections import Counter
from operator import attrgetter
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .errors import DmabufTopError

log = logging.getLogger(__name__)

_PID_INODE = attrgetter("pid", "inode")

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


class Refs(NamedTuple):
    """References one process holds on one buffer."""

    fds: int = 0
    maps: int = 0


class BufferEntry:
    """One buffer and its holders {pid: Refs}. `buffer` is a probes.dmabuf_iter.Buffer; fields a
    source cannot know are None (exporter, file_refs and attachment_count from fdinfo).
    A plain class with slots: ten thousand are made per snapshot."""

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


@dataclass
class ProcessEntry:
    pid: int
    comm: bytes
    buffers: Dict[int, Refs]  # inode -> refs
    rss: int
    pss: int

    @property
    def fd_refs(self):
        return sum(refs.fds for refs in self.buffers.values())

    @property
    def map_refs(self):
        return sum(refs.maps for refs in self.buffers.values())


@dataclass(frozen=True)
class ExporterTotal:
    exporter: Optional[str]
    buffers: int
    bytes: int


@dataclass(frozen=True)
class Totals:
    buffers: int
    bytes: int
    kernel_only_buffers: int
    kernel_only_bytes: int
    userspace_rss: int
    userspace_pss: int


@dataclass
class Inventory:
    source: str
    holders_source: str
    buffers: List[BufferEntry]  # largest first, then by inode
    processes: List[ProcessEntry]  # largest RSS first, then by pid
    exporters: List[ExporterTotal]
    totals: Totals
    notes: Tuple[str, ...] = ()
    unmatched_refs: int = 0

    def buffer(self, inode) -> BufferEntry:
        return next(entry for entry in self.buffers if entry.inode == inode)

    def process(self, pid) -> ProcessEntry:
        return next(entry for entry in self.processes if entry.pid == pid)

    def only_process(self, pid) -> "Inventory":
        """The part of the inventory process `pid` holds (the totals stay system-wide)."""
        processes = [entry for entry in self.processes if entry.pid == pid]
        inodes = set(processes[0].buffers) if processes else set()
        buffers = [entry for entry in self.buffers if entry.inode in inodes]
        return Inventory(self.source, self.holders_source, buffers, processes, exporter_totals(b.buffer for b in buffers),
                         self.totals, self.notes, self.unmatched_refs)


def exporter_totals(buffers) -> List[ExporterTotal]:
    """Count and bytes per exporter, largest total first (None: exporter unknown to the source)."""
    counts: Dict[Optional[str], List[int]] = {}
    for buffer in buffers:
        tally = counts.setdefault(buffer.exporter, [0, 0])
        tally[0] += 1
        tally[1] += buffer.size
    return sorted((ExporterTotal(name, count, size) for name, (count, size) in counts.items()),
                  key=lambda total: (-total.bytes, total.exporter or ""))


def build_inventory(buffers: Sequence, holders, source: str, holders_source: str, notes=()) -> Inventory:
    """Join buffers and holders (a probes.task_dmabufs.Holders) by inode; pure.

    Written for 10,000 buffers: counting is done by Counter over (pid, inode)
    keys (C speed), then one pass per pair.
    """
    entries = {buffer.inode: BufferEntry(buffer) for buffer in buffers}
    fd_counts = Counter(map(_PID_INODE, holders.fds))
    map_counts = Counter(map(_PID_INODE, holders.maps))
    unmatched = 0
    per_process: Dict[int, Dict[int, Refs]] = {}
    for pair in fd_counts.keys() | map_counts.keys():
        pid, inode = pair
        entry = entries.get(inode)
        if entry is None:
            unmatched += fd_counts[pair] + map_counts[pair]
            continue
        refs = Refs(fd_counts[pair], map_counts[pair])
        entry.holders[pid] = refs
        held = per_process.get(pid)
        if held is None:
            held = per_process[pid] = {}
        held[inode] = refs
    for entry in entries.values():
        if len(entry.holders) > 1:  # dict order follows set order above: make it pid order for output
            entry.holders = dict(sorted(entry.holders.items()))

    processes = []
    for pid, refs in per_process.items():
        rss = pss = 0
        for inode in refs:
            entry = entries[inode]
            size = entry.buffer.size
            rss += size
            pss += size // len(entry.holders)
        processes.append(ProcessEntry(pid, holders.comms.get(pid, b""), refs, rss, pss))
    processes.sort(key=lambda entry: (-entry.rss, entry.pid))

    ordered = sorted(entries.values(), key=lambda entry: (-entry.buffer.size, entry.buffer.inode))
    kernel_only = [entry for entry in ordered if not entry.holders]
    totals = Totals(
        buffers=len(ordered),
        bytes=sum(entry.buffer.size for entry in ordered),
        kernel_only_buffers=len(kernel_only),
        kernel_only_bytes=sum(entry.buffer.size for entry in kernel_only),
        userspace_rss=sum(entry.rss for entry in processes),
        userspace_pss=sum(entry.pss for entry in processes),
    )
    if unmatched:
        log.info("%d references to buffers created or freed between the passes were dropped", unmatched)
    return Inventory(source, holders_source, ordered, processes, exporter_totals(buffers), totals, tuple(notes),
                     unmatched)


# ---------------------------------------------------------------------------
# Reading the sources (needs a kernel; the fallbacks are what `--source` forces)


def buffers_from_bufinfo(bufinfo) -> list:
    """bufinfo records as Buffer (buffers without an inode, pre-5.3 kernels, cannot be joined: dropped)."""
    from .probes.dmabuf_iter import Buffer

    return [
        Buffer(inode=b.inode, size=b.size, exporter=b.exporter, name=b.name, file_refs=b.count,
               attachment_count=len(b.devices), attached_devices=tuple(b.devices))
        for b in bufinfo.buffers if b.inode is not None
    ]


def read_iterator_buffers() -> list:
    from .probes.dmabuf_iter import read_buffers

    return read_buffers()


def read_bufinfo_buffers() -> list:
    from .bufinfo import read_bufinfo

    return buffers_from_bufinfo(read_bufinfo())


def read_task_holders():
    from .probes.task_dmabufs import read_holders

    return read_holders()


def collect(source: Optional[str] = None, holders_source: Optional[str] = None) -> Inventory:
    """Take a snapshot. None means the best source this kernel offers, with a note saying why a
    better one was passed over; a source asked for by name fails with its own error."""
    notes = []
    scan = None

    def procfs_scan():
        nonlocal scan
        if scan is None:
            from .procfs import scan as scan_proc

            scan = scan_proc()
        return scan

    # Holders first: a buffer freed between the passes then leaves dropped refs, not a missing buffer.
    if source == "fdinfo":
        if holders_source == "iterator":
            raise DmabufTopError("--source fdinfo reads holders from /proc too; drop --holders or pick another source",
                                 exit_code=2)
        holders_source = "procfs"
    if holders_source is None:
        try:
            holders = read_task_holders()
            holders_source = "iterator"
        except DmabufTopError as error:
            notes.append(f"holders from /proc: the task iterators are unavailable ({error})")
            holders, holders_source = procfs_scan().holders, "procfs"
    elif holders_source == "iterator":
        holders = read_task_holders()
    else:
        holders = procfs_scan().holders

    if source is None:
        attempts = (("iterator", read_iterator_buffers), ("bufinfo", read_bufinfo_buffers))
        for name, reader in attempts:
            try:
                buffers, source = reader(), name
                break
            except DmabufTopError as error:
                notes.append(f"not from {SOURCE_DESCRIPTIONS[name]}: {error}")
        else:
            buffers, source = procfs_scan().buffers(), "fdinfo"
    elif source == "iterator":
        buffers = read_iterator_buffers()
    elif source == "bufinfo":
        buffers = read_bufinfo_buffers()
    else:
        buffers = procfs_scan().buffers()
    if source == "fdinfo":
        notes.append("buffers held only by the kernel are invisible from /proc; "
                     "a buffer only mapped shows the size its mappings cover and no exporter")
    return build_inventory(buffers, holders, source, holders_source, notes)


class IteratorSnapshots:
    """iter/dmabuf and the task iterators kept loaded and attached: each take() costs three
    kernel passes and the decoding, no BPF load (what a live view repeats every interval)."""

    def __init__(self):
        from .probes.dmabuf_iter import DmabufIterator
        from .probes.task_dmabufs import TaskDmabufIterator

        self._buffers = DmabufIterator()
        try:
            self._holders = TaskDmabufIterator()
        except BaseException:
            self._buffers.close()
            raise

    def take(self) -> Inventory:
        holders = self._holders.read()
        return build_inventory(self._buffers.read(), holders, "iterator", "iterator")

    def close(self):
        self._holders.close()
        self._buffers.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
