"""Who holds which dma-buf, from the kernel's task iterators (task_dmabufs.bpf.c).

`iter/task_file` yields every dma-buf fd and `iter/task_vma` every dma-buf
mapping of every process, in one kernel pass each (5.8+ and 5.12+). Records are
fixed structs decoded strictly; duplicates (a thread with an fd table or mm of
its own walked beside its leader) are removed here.
"""
import struct
from dataclasses import dataclass
from typing import NamedTuple

from ..bpf import BpfObject
from ..errors import BpfError
from . import object_path

MAGIC = 0x74646266
KIND_FD = 1
KIND_MAP = 2
COMM_LEN = 16

# Mirror of struct task_dmabuf_record (task_dmabufs.h): magic, kind, tgid, tid,
# inode, fd, start, end, pgoff, comm. struct is used rather than ctypes because
# tens of thousands of records are decoded per snapshot.
RECORD = struct.Struct("<IIIIQQQQQ16s")

FD_PROGRAM = "dump_dmabuf_fds"
MAP_PROGRAM = "dump_dmabuf_maps"


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


def _comm(raw):
    return raw.split(b"\0", 1)[0]


def decode_records(data):
    """Bytes from either program -> (fd refs, map refs, {pid: comm}), duplicates removed."""
    if len(data) % RECORD.size:
        raise BpfError(
            f"the task iterators returned {len(data)} bytes, not a whole number of {RECORD.size}-byte records: "
            "the BPF object and the Python reader disagree (rebuild with 'make bpf')"
        )
    fds, maps, comms = {}, {}, {}
    for magic, kind, tgid, tid, inode, fd, start, end, pgoff, comm in RECORD.iter_unpack(data):
        if magic != MAGIC:
            raise BpfError("the task iterators returned a record of another layout: rebuild with 'make bpf'")
        if tgid not in comms:
            comms[tgid] = _comm(comm)
        if kind == KIND_FD:
            # A thread with an fd table of its own holds real references of its own.
            fds.setdefault((tgid, tid, fd), FdRef(tgid, fd, inode))
        elif kind == KIND_MAP:
            # Threads share the mm: one VMA is one reference, however many tasks show it.
            maps.setdefault((tgid, start), MapRef(tgid, inode, start, end, pgoff))
        else:
            raise BpfError(f"the task iterators returned a record of unknown kind {kind}: rebuild with 'make bpf'")
    return list(fds.values()), list(maps.values()), comms


class TaskDmabufIterator:
    """Both task iterators loaded and attached; each read() walks every process once."""

    def __init__(self):
        self._obj = BpfObject(object_path("task_dmabufs"))
        try:
            self._obj.load()
            self._fd_program = self._obj.program(FD_PROGRAM)
            self._map_program = self._obj.program(MAP_PROGRAM)
            self._fd_link = self._fd_program.attach_iter()
            self._map_link = self._map_program.attach_iter()
        except BaseException:
            self._obj.close()
            raise

    def read_raw(self):
        """The records of both programs, undecoded (for benchmarks)."""
        return self._fd_program.read_iter(self._fd_link) + self._map_program.read_iter(self._map_link)

    def read(self):
        fds, maps, comms = decode_records(self.read_raw())
        return Holders(fds, maps, comms)

    def close(self):
        self._obj.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_holders():
    """Every dma-buf fd and mapping of every process, from the kernel in two iterator passes."""
    with TaskDmabufIterator() as iterator:
        return iterator.read()
