"""The inventory's domain types: what a dma-buf is and who holds it, whichever source said so.

Kernel-free and cheap to import: the BPF decoders (probes/dmabuf_iter.py, probes/task_dmabufs.py),
the /proc scan (procfs.py) and debugfs (bufinfo.py) all produce these, and the views consume them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Tuple


@dataclass(frozen=True)
class Buffer:
    """One dma-buf as the kernel sees it.

    `name` is raw bytes set by any process (hostile until escaped), or None for a
    buffer never named; b"" is a buffer named with an empty string.
    """

    inode: int
    size: int
    exporter: str
    name: Optional[bytes]
    file_refs: int
    attachment_count: int
    attached_devices: Tuple[str, ...] = field(default_factory=tuple)
    vmapped: bool = False
    backing_inode: int = 0  # udmabuf: the memfd whose pages it holds...
    backing_dev: int = 0  # ...on this device (user-space st_dev encoding, as os.stat gives)

    @property
    def name_text(self):
        """The name decoded for programs (invalid UTF-8 replaced); escape it again before showing it."""
        return None if self.name is None else self.name.decode("utf-8", "replace")



class FdRef(NamedTuple):
    """Process `pid` has dma-buf `inode` open as descriptor `fd` (a tuple: cheap by the ten thousand)."""

    pid: int
    fd: int
    inode: int


class MapRef(NamedTuple):
    """Process `pid` maps dma-buf `inode` at [start, end), from page `pgoff` of the buffer."""

    pid: int
    inode: int
    start: int
    end: int
    pgoff: int = 0


@dataclass
class Holders:
    """Every reference user space holds on a dma-buf, as one source saw it.

    `comms` maps each pid found to its command name (bytes: any process can set it).
    """

    fds: list
    maps: list
    comms: dict


class Refs(NamedTuple):
    """References one process holds on one buffer."""

    fds: int = 0
    maps: int = 0


@dataclass(frozen=True)
class ExporterTotal:
    exporter: Optional[str]
    buffers: int
    bytes: int
