"""Who holds which dma-buf, from the kernel's task iterators (task_dmabufs.bpf.c).

`iter/task_file` yields every dma-buf fd and `iter/task_vma` every dma-buf
mapping of every process, in one kernel pass each (5.8+ and 5.12+). Records are
fixed structs decoded strictly; duplicates (a thread with an fd table or mm of
its own walked beside its leader) are removed here.
"""
import struct

import numpy as np

from ..bpf import BpfObject
from ..errors import BpfError
from ..inventory.types import FdRef, Holders, MapRef
from . import object_path

MAGIC = 0x74646266
KIND_FD = 1
KIND_MAP = 2
COMM_LEN = 16
# Mirror of struct task_dmabuf_record (task_dmabufs.h): magic, kind, tgid, tid,
# inode, fd, start, end, pgoff, comm. struct is used rather than ctypes because
# tens of thousands of records are decoded per snapshot.
RECORD = struct.Struct("<IIIIQQQQQ16s")
# Where decode_columns finds the same fields, the record seen as 32-bit and as 64-bit words.
_U32_MAGIC, _U32_KIND, _U32_TGID, _U32_TID = 0, 1, 2, 3
_U64_INODE, _U64_FD, _U64_START = 2, 3, 4
_COMM_OFFSET = RECORD.size - COMM_LEN

FD_PROGRAM = "dump_dmabuf_fds"
MAP_PROGRAM = "dump_dmabuf_maps"


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


class HolderColumns:
    """Holders as arrays: (pid, inode) of every fd reference and of every mapping, duplicates removed,
    and {pid: comm}. What the inventory's join needs, without an object per reference."""

    def __init__(self, fd_pid, fd_inode, map_pid, map_inode, comms):
        self.fd_pid, self.fd_inode = fd_pid, fd_inode
        self.map_pid, self.map_inode = map_pid, map_inode
        self.comms = comms

    @classmethod
    def from_holders(cls, holders: Holders):
        """Columns over the lists a slower source (procfs) made; those lists are already de-duplicated."""
        return cls(np.array([ref.pid for ref in holders.fds], dtype=np.int64),
                   np.array([ref.inode for ref in holders.fds], dtype=np.uint64),
                   np.array([ref.pid for ref in holders.maps], dtype=np.int64),
                   np.array([ref.inode for ref in holders.maps], dtype=np.uint64),
                   dict(holders.comms))


def _first_of_each(major, minor):
    """Row indices keeping the first row of each distinct (major, minor) pair, in ascending order.

    lexsort is stable: within a pair, the first row comes first. (Stable sorts only:
    see inventory.stable_groups for why.)
    """
    later, earlier = slice(1, None), slice(None, -1)
    if np.all((major[later] > major[earlier]) | ((major[later] == major[earlier]) & (minor[later] > minor[earlier]))):
        return np.arange(len(major))  # strictly ascending, as a pass usually yields them: nothing repeats
    order = np.lexsort((minor, major))
    major, minor = major[order], minor[order]
    repeated = (major[1:] == major[:-1]) & (minor[1:] == minor[:-1])
    return np.sort(order[np.concatenate(([True], ~repeated))], kind="stable") if len(order) else order


def decode_columns(data) -> HolderColumns:
    """Bytes from either program -> HolderColumns: the checks and de-duplication of decode_records, on arrays.

    Fields are read as 1-D columns of a 2-D integer view of the records: numpy's
    structured-dtype paths cost microseconds per record on the lab's emulated CPU.
    """
    if len(data) % RECORD.size:
        decode_records(data)  # raises the torn-stream error
    u32 = np.frombuffer(data, dtype="<u4").reshape(-1, RECORD.size // 4)
    u64 = np.frombuffer(data, dtype="<u8").reshape(-1, RECORD.size // 8)
    if not np.all(u32[:, _U32_MAGIC] == MAGIC):
        raise BpfError("the task iterators returned a record of another layout: rebuild with 'make bpf'")
    kind = u32[:, _U32_KIND]
    is_fd, is_map = kind == KIND_FD, kind == KIND_MAP
    if not np.all(is_fd | is_map):
        unknown = int(kind[~(is_fd | is_map)][0])
        raise BpfError(f"the task iterators returned a record of unknown kind {unknown}: rebuild with 'make bpf'")
    tgid, inode = u32[:, _U32_TGID].astype(np.int64), u64[:, _U64_INODE]
    fd_rows, map_rows = np.flatnonzero(is_fd), np.flatnonzero(is_map)
    # As decode_records: an fd per (tgid, tid, fd) -- a thread with a table of its own holds its own
    # references -- and a mapping per (tgid, start), however many threads sharing the mm showed it.
    thread = (tgid[fd_rows].astype(np.uint64) << np.uint64(32)) | u32[fd_rows, _U32_TID]
    fd_rows = fd_rows[_first_of_each(thread, u64[fd_rows, _U64_FD])]
    map_rows = map_rows[_first_of_each(tgid[map_rows], u64[map_rows, _U64_START])]
    comms = {}  # the first comm seen per process; a process's records come in runs
    runs = np.flatnonzero(np.concatenate(([len(tgid) > 0], tgid[1:] != tgid[:-1])))
    for pid, row in zip(tgid[runs].tolist(), runs.tolist()):
        if pid not in comms:
            comms[pid] = _comm(data[row * RECORD.size + _COMM_OFFSET:(row + 1) * RECORD.size])
    return HolderColumns(tgid[fd_rows], inode[fd_rows], tgid[map_rows], inode[map_rows], comms)


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

    def read_columns(self) -> HolderColumns:
        """The same passes as read(), decoded into arrays."""
        return decode_columns(self.read_raw())

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
