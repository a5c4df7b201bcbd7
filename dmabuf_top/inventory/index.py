"""The buffer index: which dma-buf an I/O target is, and whether that buffer is alive or gone.

The tracer counts I/O per target (probes.iopaths.Target: kind, inode, st_dev, path). A target is a buffer

    "dmabuf"  a dma-buf mapping: the buffer is the target's own inode;
    "shmem"   a memfd whose pages a udmabuf holds: the buffer is that udmabuf, found by the memfd's
              (inode, st_dev) (the iterator's backing_inode and backing_dev);

and anything else (anonymous memory, a plain file, a memfd behind no udmabuf) is no buffer (0).

`BufferIndex` learns from one iter/dmabuf read per tick: the Buffers of a read, or the BufferColumns of
an inventory (the same pass the snapshot took, so the live view and the exporter read once). It answers

    alive(kind, inode, dev)      the latest read shows the buffer (or the udmabuf over the memfd);
    buffer_of(kind, inode, dev)  the buffer, when one of the last KEPT_READS reads showed it, or the lifecycle
                                 probe saw it (learn_lifecycle; a udmabuf's memfd from its "backing" record):
                                 bytes moved into a buffer freed before the next read, or made and freed
                                 between two reads, are still its own;
    per_buffer(by_target)        {buffer inode: {path: Counters}};
    gone(by_target, previous)    the targets whose counters a delta reader may forget (the rule below).

The forgetting rule (shared by `record`, the live view and the exporter): a dma-buf or memfd target may
be forgotten (Tracer.forget) once it did nothing since the previous snapshot (its last delta is taken)
and the latest read no longer shows it. If it moves again its key comes back from zero and the next
delta counts it as new: nothing is counted twice or lost. Without it the tracer's io_by_target map fills
under churn with buffers that are gone, and refuses the keys of new ones.

`BufferFeed` is one loaded iterator feeding one index, read at most once per tick however many readers
of the tick ask (a recording's buffer snapshots and its I/O attribution).
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import DmabufTopError
from ..probes.dmabuf_iter import DmabufIterator
from ..probes.iopaths import Counters

# Targets whose objects can be gone for good (a dma-buf freed, a memfd closed): their counters can be
# forgotten. Files on disk stay, and a reader cannot tell an idle file from a deleted one.
FORGETTABLE_KINDS = ("dmabuf", "shmem")


class _Read:
    """One iter/dmabuf read: its dma-buf inodes and {(memfd inode, st_dev): udmabuf inode}.

    From BufferColumns (ten thousand buffers, most reads never asked about) the sets are made on the
    first question; from Buffer objects (any object with inode, backing_inode, backing_dev) at once."""

    __slots__ = ("_columns", "_inodes", "_by_memfd")

    def __init__(self, buffers):
        self._columns = None
        self._inodes = self._by_memfd = None
        if hasattr(buffers, "backing_files"):  # probes.dmabuf_iter.BufferColumns
            self._columns = buffers
        else:
            buffers = list(buffers)
            self._inodes = {buffer.inode for buffer in buffers}
            self._by_memfd = {(buffer.backing_inode, buffer.backing_dev): buffer.inode
                              for buffer in buffers if getattr(buffer, "backing_inode", 0)}

    def _tables(self) -> Tuple[set, Dict[Tuple[int, int], int]]:
        if self._inodes is None:
            self._inodes = set(self._columns.inode.tolist())
            self._by_memfd = self._columns.backing_files()
            self._columns = None
        return self._inodes, self._by_memfd

    def buffer_of(self, kind, inode, dev) -> int:
        if kind == "dmabuf":
            return inode if inode in self._tables()[0] else 0
        if kind == "shmem":
            return self._tables()[1].get((inode, dev), 0)
        return 0


class BufferIndex:
    """Targets -> buffers over the last KEPT_READS reads; alive: shown by the latest (see the module doc).

    What is kept is bounded by the buffers alive over the last reads, not by every buffer ever made
    (under churn that grew by thousands a second). A recorder drains its ring before each read, and a
    record made between a drain and the read that no longer shows its buffer reaches the poll after that
    one: three reads keep such a buffer known long enough."""

    KEPT_READS = 3

    def __init__(self):
        self._reads: deque = deque(maxlen=self.KEPT_READS)  # newest first
        # dma-bufs the lifecycle probe saw: inode -> reads left to keep it (None: not released yet)
        self._lifecycle: Dict[int, Optional[int]] = {}
        # udmabufs the lifecycle probe saw exported: (memfd inode, st_dev) -> udmabuf inode, kept as long as the
        # udmabuf is in _lifecycle
        self._lifecycle_memfds: Dict[Tuple[int, int], int] = {}

    @classmethod
    def of_inventory(cls, inventory) -> "BufferIndex":
        """An index that learnt one inventory (the buffers it shows are the alive ones)."""
        index = cls()
        index.learn_inventory(inventory)
        return index

    def learn(self, buffers):
        """One read: Buffer objects, or BufferColumns."""
        self._reads.appendleft(_Read(buffers))
        forgotten = set()
        for inode, left in list(self._lifecycle.items()):
            if left is not None:
                if left <= 1:
                    del self._lifecycle[inode]
                    forgotten.add(inode)
                else:
                    self._lifecycle[inode] = left - 1
        if forgotten and self._lifecycle_memfds:  # a forgotten udmabuf's memfd goes with it
            self._lifecycle_memfds = {memfd: inode for memfd, inode in self._lifecycle_memfds.items()
                                      if inode not in forgotten}

    def learn_lifecycle(self, events):
        """Lifecycle records ((inode, event) pairs, or objects with both): a dma-buf made and freed between two
        reads is known from them. A released one is kept as long as a read would keep it (KEPT_READS reads);
        one never released, until it is (a buffer made before the probe is known from the reads only)."""
        for event in events:
            inode, name = (event.inode, event.event) if hasattr(event, "event") else event
            if not inode:
                continue
            if name == "backing" and getattr(event, "backing", None):
                self._lifecycle_memfds[event.backing] = inode
            if name == "release":
                self._lifecycle[inode] = self.KEPT_READS
            elif inode not in self._lifecycle or name == "export":
                self._lifecycle[inode] = None

    def learn_inventory(self, inventory):
        """The read behind an inventory.Inventory (its columns; its Buffer objects when it has none)."""
        if inventory.arrays is not None:
            self.learn(inventory.arrays.columns)
        else:
            self.learn(entry.buffer for entry in inventory.buffers)

    def __len__(self):
        """Buffers and udmabuf memfds known (each once, however many reads showed it)."""
        inodes, memfds = set(), set()
        for read in self._reads:
            read_inodes, by_memfd = read._tables()
            inodes |= read_inodes
            memfds |= by_memfd.keys()
        return len(inodes) + len(memfds)

    def alive(self, kind: str, inode: int, dev: int) -> bool:
        """The latest read shows it: a dma-buf, or the memfd behind a udmabuf."""
        return bool(self._reads) and self._reads[0].buffer_of(kind, inode, dev) != 0

    def buffer_of(self, kind: str, inode: int, dev: int, alive_only: bool = False) -> int:
        """The dma-buf inode the target is (0: no known buffer). alive_only: as the latest read shows."""
        for read in self._reads:
            found = read.buffer_of(kind, inode, dev)
            if found or alive_only:
                return found
        if kind == "shmem":
            return self._lifecycle_memfds.get((inode, dev), 0)
        return inode if kind == "dmabuf" and inode in self._lifecycle else 0

    def per_buffer(self, by_target, alive_only: bool = False) -> Dict[int, Dict[str, Counters]]:
        """{buffer inode: {path: Counters}} from a snapshot's by_target; targets of no buffer left out."""
        out: Dict[int, Dict[str, Counters]] = {}
        for target, counters in by_target.items():
            inode = self.buffer_of(target.kind, target.inode, target.dev, alive_only)
            if inode:
                paths = out.setdefault(inode, {})
                paths[target.path] = paths[target.path] + counters if target.path in paths else counters
        return out

    def gone(self, by_target, previous_by_target) -> List:
        """The targets of a snapshot a delta reader may forget: a dma-buf or memfd that did nothing since
        the previous snapshot and that the latest read no longer shows."""
        return [target for target, counters in by_target.items()
                if target.kind in FORGETTABLE_KINDS and previous_by_target.get(target) == counters
                and not self.alive(target.kind, target.inode, target.dev)]

    def forget_gone(self, tracer, snapshot, previous_by_target) -> List:
        """Forget the gone targets in the kernel (tracer.forget) and in `snapshot`, which is then the next
        call's previous one. Returns the targets forgotten."""
        gone = self.gone(snapshot.by_target, previous_by_target)
        if gone:
            tracer.forget(targets=gone)
            for target in gone:
                del snapshot.by_target[target]
        return gone


class BufferFeed:
    """One loaded iter/dmabuf iterator feeding one BufferIndex, read at most once per tick.

    Every reader of a tick calls read(tick) with the same tick (the recorder polls its sources with one
    `now`): the first call reads the kernel and teaches the index, the others get the same buffers. A
    reader calls open() before its first read and close() when done; the last close() frees the iterator.
    `reads` counts the kernel passes (tests, benchmarks)."""

    def __init__(self, iterator_factory: Optional[Callable] = None):
        self.index = BufferIndex()
        self.reads = 0
        self._factory = iterator_factory or DmabufIterator
        self._iterator = None
        self._error: Optional[DmabufTopError] = None
        self._users = 0
        self._tick = None
        self._buffers: list = []

    def open(self):
        """Load the iterator (the first caller does); raises DmabufTopError where the kernel has none."""
        self._users += 1
        if self._iterator is None and self._error is None:
            try:
                self._iterator = self._factory()
            except DmabufTopError as error:
                self._error = error
        if self._error is not None:
            raise self._error

    @property
    def available(self) -> bool:
        return self._iterator is not None

    def read(self, tick) -> list:
        """The buffers of this tick's read (taken now when the tick has none yet); [] without an iterator."""
        if self._iterator is None:
            return []
        if tick != self._tick or not self.reads:
            self._buffers = self._iterator.read()
            self.reads += 1
            self._tick = tick
            self.index.learn(self._buffers)
        return self._buffers

    def close(self):
        """One reader done; the last frees the iterator."""
        self._users -= 1
        if self._users <= 0 and self._iterator is not None:
            self._iterator.close()
            self._iterator = None
