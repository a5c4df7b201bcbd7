"""Decodes what iopaths.bpf.c aggregates: ctypes mirrors of iopaths.h and pure decoders.

The loader lives in probes/tracer.py, the hook catalogue in probes/hooks.py; this module has
no kernel dependency, so its decoders are tested anywhere.
"""
import ctypes
from dataclasses import dataclass, field
from typing import Tuple

from ..errors import BpfError
from ..kernelfs import filesystem_name, kernel_dev_to_user

HIST_SLOTS = 32
COMM_LEN = 16

PATHS = {0: "other", 1: "read", 2: "write", 3: "copy_file_range", 4: "sendfile", 5: "splice", 6: "rw_file",
         7: "io_uring", 8: "aio"}
PATH_IDS = {name: number for number, name in PATHS.items()}
KINDS = {0: "none", 1: "dmabuf", 2: "shmem", 3: "file", 4: "pipe", 5: "socket", 6: "other"}
STACK_POINTS = {1: "cpu_copy_read", 2: "cpu_copy_write", 3: "gup"}
RECORD_IO = 1  # (2 was the lifecycle record: buffer_lifecycle.bpf.c has its own ring now)
# enum iomap_counted: the maps whose refused new keys the map_full array counts, in its order.
COUNTED_MAPS = ("io_by_target", "io_by_task", "pagecache_by_file", "stack_counts", "traced_tgids")


class IoTargetKey(ctypes.Structure):
    _fields_ = [("inode", ctypes.c_uint64), ("dev", ctypes.c_uint32), ("path", ctypes.c_uint16),
                ("kind", ctypes.c_uint8), ("direct", ctypes.c_uint8)]


class IoTaskKey(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("path", ctypes.c_uint16), ("src_kind", ctypes.c_uint8),
                ("dst_kind", ctypes.c_uint8), ("error", ctypes.c_int32), ("src_magic", ctypes.c_uint32),
                ("dst_magic", ctypes.c_uint32)]


class IoCountersC(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "calls", "errors", "bytes", "requested", "cpu_copied", "pinned_pages", "got_pages", "gup_calls",
        "pc_added", "pc_removed", "latency_ns")] + [("latency_hist", ctypes.c_uint64 * HIST_SLOTS)]


class PagecacheKey(ctypes.Structure):
    _fields_ = [("inode", ctypes.c_uint64), ("dev", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


class PagecacheCountsC(ctypes.Structure):
    _fields_ = [("added", ctypes.c_uint64), ("removed", ctypes.c_uint64)]


class StackKey(ctypes.Structure):
    _fields_ = [("stack_id", ctypes.c_int32), ("point", ctypes.c_uint16), ("path", ctypes.c_uint16)]


class StackCountsC(ctypes.Structure):
    _fields_ = [("hits", ctypes.c_uint64), ("amount", ctypes.c_uint64)]


class IoRecordC(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("tgid", ctypes.c_uint32), ("tid", ctypes.c_uint32),
                ("path", ctypes.c_uint16), ("kind", ctypes.c_uint8), ("direct", ctypes.c_uint8),
                ("timestamp_ns", ctypes.c_uint64), ("latency_ns", ctypes.c_uint64), ("ret", ctypes.c_int64),
                ("requested", ctypes.c_uint64), ("inode", ctypes.c_uint64), ("dev", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32), ("cpu_copied", ctypes.c_uint64), ("pinned_pages", ctypes.c_uint64),
                ("pc_added", ctypes.c_uint64), ("comm", ctypes.c_char * COMM_LEN)]


# Each mirror and the C struct it mirrors, for the size test.
MIRRORS = {
    "io_target_key": IoTargetKey, "io_task_key": IoTaskKey, "io_counters": IoCountersC,
    "pagecache_key": PagecacheKey,
    "pagecache_counts": PagecacheCountsC, "stack_key": StackKey, "stack_counts": StackCountsC,
    "io_record": IoRecordC,
}


def _decode(struct_type, raw):
    if len(raw) < ctypes.sizeof(struct_type):
        raise BpfError(f"a {struct_type.__name__} from the kernel has {len(raw)} bytes, expected "
                       f"{ctypes.sizeof(struct_type)}: rebuild the BPF objects with 'make bpf'")
    return struct_type.from_buffer_copy(raw[: ctypes.sizeof(struct_type)])


@dataclass
class Counters:
    """What one path did: bytes, cost inside, latency. Values are cumulative since tracing started."""

    calls: int = 0
    errors: int = 0
    bytes: int = 0
    requested: int = 0
    cpu_copied: int = 0
    pinned_pages: int = 0
    got_pages: int = 0
    gup_calls: int = 0
    pc_added: int = 0
    pc_removed: int = 0
    latency_ns: int = 0
    latency_hist: Tuple[int, ...] = field(default_factory=lambda: (0,) * HIST_SLOTS)

    SCALARS = ("calls", "errors", "bytes", "requested", "cpu_copied", "pinned_pages", "got_pages", "gup_calls",
               "pc_added", "pc_removed", "latency_ns")

    @classmethod
    def from_raw(cls, raw):
        c = _decode(IoCountersC, raw)
        return cls(**{name: getattr(c, name) for name in cls.SCALARS}, latency_hist=tuple(c.latency_hist))

    def __add__(self, other):
        return Counters(**{name: getattr(self, name) + getattr(other, name) for name in self.SCALARS},
                        latency_hist=tuple(a + b for a, b in zip(self.latency_hist, other.latency_hist)))

    def __sub__(self, other):
        return Counters(**{name: getattr(self, name) - getattr(other, name) for name in self.SCALARS},
                        latency_hist=tuple(a - b for a, b in zip(self.latency_hist, other.latency_hist)))

    def to_dict(self, untraced=()):
        """untraced: field names whose hooks are missing; they become null, never 0."""
        out = {name: None if name in untraced else getattr(self, name) for name in self.SCALARS}
        out["latency_hist_us_log2"] = list(self.latency_hist)
        return out


@dataclass(frozen=True)
class Target:
    """The memory object a call moved bytes into or out of, and how."""

    inode: int
    dev: int  # user-space st_dev encoding
    path: str
    kind: str
    direct: bool


def decode_target(raw):
    k = _decode(IoTargetKey, raw)
    return Target(k.inode, kernel_dev_to_user(k.dev) if k.dev else 0, PATHS.get(k.path, str(k.path)),
                  KINDS.get(k.kind, str(k.kind)), bool(k.direct))


@dataclass(frozen=True)
class Outcome:
    path: str
    src_kind: str
    dst_kind: str
    error: int  # 0 or a negative errno
    src_fs: str
    dst_fs: str


def _fs_name(magic):
    return filesystem_name(magic) if magic else "-"


OUTCOME_FIELDS = ("calls", "bytes", "requested")


def decode_task(raw):
    """An io_by_task key -> (tgid, path, Outcome); the outcome is None for IOPATH_OTHER (work outside a
    traced call has no ends)."""
    k = _decode(IoTaskKey, raw)
    path = PATHS.get(k.path, str(k.path))
    if k.path == 0:
        return k.tgid, path, None
    return k.tgid, path, Outcome(path, KINDS.get(k.src_kind, "?"), KINDS.get(k.dst_kind, "?"), k.error,
                                 _fs_name(k.src_magic), _fs_name(k.dst_magic))


def tasks_and_outcomes(entries):
    """[(tgid, path, Outcome or None, Counters)] from io_by_task -> ({(tgid, path): Counters},
    {Outcome: {"calls", "bytes", "requested"}}): the per-process totals and the outcomes across
    processes, both sums over io_by_task's keys."""
    by_task, outcomes = {}, {}
    for tgid, path, outcome, counters in entries:
        known = by_task.get((tgid, path))
        by_task[(tgid, path)] = counters if known is None else known + counters
        if outcome is not None:
            totals = outcomes.setdefault(outcome, dict.fromkeys(OUTCOME_FIELDS, 0))
            for name in OUTCOME_FIELDS:
                totals[name] += getattr(counters, name)
    return by_task, outcomes


def decode_pagecache(raw_key, raw_value):
    k = _decode(PagecacheKey, raw_key)
    v = _decode(PagecacheCountsC, raw_value)
    return (k.inode, kernel_dev_to_user(k.dev)), (v.added, v.removed)


def decode_stack_key(raw_key, raw_value):
    k = _decode(StackKey, raw_key)
    v = _decode(StackCountsC, raw_value)
    return (k.stack_id, STACK_POINTS.get(k.point, str(k.point)), PATHS.get(k.path, str(k.path))), (v.hits, v.amount)


def decode_stack_ips(raw):
    """A stack_traces value -> the non-zero instruction pointers, innermost first."""
    count = len(raw) // 8
    ips = (ctypes.c_uint64 * count).from_buffer_copy(raw[: count * 8])
    return [ip for ip in ips if ip]


@dataclass(frozen=True)
class IoRecord:
    tgid: int
    tid: int
    comm: str
    path: str
    kind: str
    direct: bool
    timestamp_ns: int
    latency_ns: int
    ret: int
    requested: int
    inode: int
    dev: int
    cpu_copied: int
    pinned_pages: int
    pc_added: int


def decode_record(raw):
    """One ring buffer record -> IoRecord."""
    if len(raw) < 4:
        raise BpfError("a ring buffer record shorter than its type field: rebuild with 'make bpf'")
    kind = int.from_bytes(raw[:4], "little")
    if kind == RECORD_IO:
        r = _decode(IoRecordC, raw)
        return IoRecord(r.tgid, r.tid, r.comm.decode("utf-8", "replace"), PATHS.get(r.path, str(r.path)),
                        KINDS.get(r.kind, str(r.kind)), bool(r.direct), r.timestamp_ns, r.latency_ns, r.ret,
                        r.requested, r.inode, kernel_dev_to_user(r.dev) if r.dev else 0, r.cpu_copied,
                        r.pinned_pages, r.pc_added)
    raise BpfError(f"a ring buffer record of unknown type {kind}: rebuild with 'make bpf'")
