"""Taking an inventory: the best source this kernel offers for buffers and for holders, or the one asked for.

`collect` reads once (what `snapshot` does); `IteratorSnapshots` keeps the iterators loaded and attached,
for a reader that takes one every interval (the live view, the exporter). Both join with
inventory.build_inventory; the fallbacks (bufinfo, /proc) are what `--source` forces.
"""
from __future__ import annotations

from typing import Optional

from ..errors import DmabufTopError
from ..probes.dmabuf_iter import DmabufIterator
from ..probes.task_dmabufs import TaskDmabufIterator
from .bufinfo import read_bufinfo
from .cgroups import read_cgroups
from .inventory import SOURCE_DESCRIPTIONS, Inventory, build_inventory
from .procfs import scan as scan_proc
from .types import Buffer


def buffers_from_bufinfo(bufinfo) -> list:
    """bufinfo records as Buffer (buffers without an inode, pre-5.3 kernels, cannot be joined: dropped)."""
    return [
        Buffer(inode=b.inode, size=b.size, exporter=b.exporter, name=b.name, file_refs=b.count,
               attachment_count=len(b.devices), attached_devices=tuple(b.devices))
        for b in bufinfo.buffers if b.inode is not None
    ]


def read_iterator_buffers():
    with DmabufIterator() as iterator:
        return iterator.read_columns()


def read_bufinfo_buffers() -> list:
    return buffers_from_bufinfo(read_bufinfo())


def read_task_holders():
    with TaskDmabufIterator() as iterator:
        return iterator.read_columns()


def collect(source: Optional[str] = None, holders_source: Optional[str] = None) -> Inventory:
    """Take a snapshot. None means the best source this kernel offers, with a note saying why a
    better one was passed over; a source asked for by name fails with its own error."""
    notes = []
    scan = None

    def procfs_scan():
        nonlocal scan
        if scan is None:
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
    if scan is not None and scan.refused:
        notes.append(f"the fds and mappings of {scan.refused} processes could not be read (other users'): "
                     "their buffers and holdings are missing here; run as root")
    if source == "fdinfo":
        notes.append("buffers held only by the kernel are invisible from /proc; "
                     "a buffer only mapped shows the size its mappings cover and no exporter")
    return with_cgroups(build_inventory(buffers, holders, source, holders_source, notes))


def with_cgroups(inventory: Inventory) -> Inventory:
    """The inventory with its holders' cgroups read (/proc/PID/cgroup, one small read per holding process)."""
    inventory.cgroups = read_cgroups(process.pid for process in inventory.processes)
    return inventory


class IteratorSnapshots:
    """iter/dmabuf and the task iterators kept loaded and attached: each take() costs three
    kernel passes and the decoding, no BPF load (what a live view repeats every interval)."""

    def __init__(self):
        self._buffers = DmabufIterator()
        try:
            self._holders = TaskDmabufIterator()
        except BaseException:
            self._buffers.close()
            raise

    def take(self) -> Inventory:
        holders = self._holders.read_columns()
        return with_cgroups(build_inventory(self._buffers.read_columns(), holders, "iterator", "iterator"))

    def close(self):
        self._holders.close()
        self._buffers.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
