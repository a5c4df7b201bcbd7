"""The dma-buf view from /proc, as Android's libdmabufinfo takes it: no BPF, no debugfs.

Per process, an fd is a dma-buf when /proc/PID/fd/N links to "/dmabuf:NAME";
its /proc/PID/fdinfo/N then gives (7.x layout, the dma-buf part last):

    pos:\t0
    flags:\t02000002
    mnt_id:\t14
    ino:\t1                       (kernels before 5.14 lack it: fstat the fd instead)
    size:\t1048576
    count:\t1                     the file's reference count (fds + mappings + kernel users)
    exp_name:\tsystem
    name:\tRAW BYTES              only when named; raw up to the final newline, newlines included

A mapping is a /proc/PID/maps line whose path starts with "/dmabuf:"; the
kernel escapes a newline in the name as \\012 there and leaves tabs and every
other byte raw. A buffer only mapped (its fd closed) shows only there, so its
exporter is unknown and its size is what the mappings cover (libdmabufinfo's
answer too). A buffer held by the kernel alone (in flight in a unix socket, an
attachment of a driver) is invisible to this scan.

Processes that exit mid-scan are skipped silently: a snapshot of a moving
system is all anyone gets. Processes whose fd table we may not read (another
user's, without root) are skipped and counted in `ProcfsScan.refused`. Only each process's own fd
table (/proc/PID/fd) is read; a thread with an fd table of its own (clone
without CLONE_FILES) is not, as libdmabufinfo does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from .types import Buffer, FdRef, Holders, MapRef

PROC = "/proc"
DMABUF_PATH_PREFIX = b"/dmabuf:"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class DmabufFdinfo:
    """The dma-buf fields of one fdinfo file. name is None when the buffer is unnamed."""

    inode: Optional[int]
    size: int
    count: int
    exporter: str
    name: Optional[bytes]


@dataclass(frozen=True)
class MapsEntry:
    start: int
    end: int
    offset: int  # bytes into the buffer
    inode: int
    name: bytes  # as far as maps can tell: b"" for unnamed and for an empty name alike


def parse_fdinfo(data: bytes) -> Optional[DmabufFdinfo]:
    """fdinfo bytes -> the dma-buf's fields, or None if the file is not a dma-buf."""
    marker = data.find(b"\nexp_name:\t")
    if marker < 0 and not data.startswith(b"exp_name:\t"):
        return None
    head, rest = data[: max(marker, 0)], data[max(marker, 0):].lstrip(b"\n")
    fields = {}
    for line in head.split(b"\n"):
        key, sep, value = line.partition(b":")
        if sep:
            fields[key] = value.strip()
    exporter_line, _, after = rest.partition(b"\n")
    exporter = exporter_line[len(b"exp_name:\t"):]
    name = None
    if after.startswith(b"name:\t"):
        # The name is the file's last field and may contain newlines: take it to the final one.
        name = after[len(b"name:\t"):]
        if name.endswith(b"\n"):
            name = name[:-1]
    try:
        inode = int(fields[b"ino"]) if b"ino" in fields else None
        return DmabufFdinfo(inode, int(fields[b"size"]), int(fields[b"count"]),
                            exporter.decode("utf-8", "backslashreplace"), name)
    except (KeyError, ValueError):
        return None


def unescape_maps_path(raw: bytes) -> bytes:
    """Undo the one escape /proc/PID/maps applies to paths (newline -> \\012).

    A name that itself contains the four bytes \\012 reads back as a newline: maps
    cannot tell them apart (the backslash is not escaped).
    """
    return raw.replace(b"\\012", b"\n")


def parse_maps_line(line: bytes) -> Optional[MapsEntry]:
    """One /proc/PID/maps line -> MapsEntry if it maps a dma-buf, else None."""
    # address perms offset dev inode, then spaces up to a fixed column, then the path (which may hold spaces/tabs).
    parts = line.rstrip(b"\n").split(b" ", 5)
    if len(parts) < 6:
        return None
    path = parts[5].lstrip(b" ")
    if not path.startswith(DMABUF_PATH_PREFIX):
        return None
    try:
        start, end = (int(value, 16) for value in parts[0].split(b"-"))
        return MapsEntry(start, end, int(parts[2], 16), int(parts[4]),
                         unescape_maps_path(path[len(DMABUF_PATH_PREFIX):]))
    except ValueError:
        return None


@dataclass
class ProcfsScan:
    """What one pass over /proc found: dma-bufs seen through fds, and every holder."""

    fdinfo: Dict[int, DmabufFdinfo]  # inode -> the buffer as its fdinfo showed it
    maps: List[MapsEntry]
    holders: Holders
    refused: int = 0  # processes whose fd table we may not read (another user's, without root)

    def buffers(self) -> List[Buffer]:
        """The inventory /proc can give: exact for buffers behind an fd, partial for mapped-only ones."""
        found = {}
        for inode, info in self.fdinfo.items():
            found[inode] = Buffer(inode=inode, size=info.size, exporter=info.exporter, name=info.name,
                                  file_refs=info.count, attachment_count=None)
        mapped_only: Dict[int, list] = {}
        for entry in self.maps:
            if entry.inode not in found:
                mapped_only.setdefault(entry.inode, []).append(entry)
        for inode, entries in mapped_only.items():
            found[inode] = Buffer(
                inode=inode,
                size=max(entry.offset + entry.end - entry.start for entry in entries),
                exporter=None,
                name=entries[0].name or None,
                file_refs=None,
                attachment_count=None,
            )
        return list(found.values())


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:  # gone, not ours to read, or not a file any more
        return None


def _pids(proc: str) -> List[int]:
    return [int(name) for name in os.listdir(proc) if name.isdigit()]


def scan_process(pid: int, proc: str, fdinfo: Dict[int, DmabufFdinfo], holders: Holders, maps: List[MapsEntry]):
    """Adds what one process holds; returns False when its fd table is not ours to read."""
    base = f"{proc}/{pid}"
    try:
        fds = os.listdir(f"{base}/fd")
    except PermissionError:
        return False
    except OSError:
        return True  # exited, or a kernel thread's empty table
    held = False
    for name in fds:
        try:
            target = os.readlink(f"{base}/fd/{name}".encode())
        except OSError:
            continue
        if not target.startswith(DMABUF_PATH_PREFIX):
            continue
        raw = _read(f"{base}/fdinfo/{name}")
        info = parse_fdinfo(raw) if raw is not None else None
        if info is None:
            continue
        if info.inode is None:
            try:
                info = DmabufFdinfo(os.stat(f"{base}/fd/{name}").st_ino, info.size, info.count,
                                    info.exporter, info.name)
            except OSError:
                continue
        fdinfo.setdefault(info.inode, info)
        holders.fds.append(FdRef(pid, int(name), info.inode))
        held = True
    raw_maps = _read(f"{base}/maps")
    for line in (raw_maps or b"").split(b"\n"):
        if DMABUF_PATH_PREFIX not in line:
            continue
        entry = parse_maps_line(line)
        if entry is not None:
            maps.append(entry)
            holders.maps.append(MapRef(pid, entry.inode, entry.start, entry.end, entry.offset // PAGE_SIZE))
            held = True
    if held:
        comm = _read(f"{base}/comm")
        holders.comms[pid] = comm[:-1] if comm and comm.endswith(b"\n") else (comm or b"")
    return True


def scan(proc: str = PROC) -> ProcfsScan:
    """Every dma-buf fd and mapping of every process we may look at, in one pass over /proc."""
    fdinfo: Dict[int, DmabufFdinfo] = {}
    maps: List[MapsEntry] = []
    holders = Holders([], [], {})
    refused = 0
    for pid in _pids(proc):
        refused += scan_process(pid, proc, fdinfo, holders, maps) is False
    return ProcfsScan(fdinfo, maps, holders, refused)
