"""Decodes what buffer_lifecycle.bpf.c sees: ctypes mirrors of buffer_lifecycle.h and pure decoders.

The Tracer (probes/tracer.py) loads the object beside iopaths.bpf.o from the hook catalogue
(probes/hooks.py); this module has no kernel dependency, so its decoders are tested anywhere.
"""
import ctypes
from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import BpfError
from ..kernelfs import kernel_dev_to_user

COMM_LEN = 16
EXPORTER_LEN = 32
NAME_LEN = 32  # DMA_BUF_NAME_LEN

EVENTS = {1: "export", 2: "fd", 3: "get", 4: "put", 5: "mmap", 6: "mmap_internal", 7: "attach", 8: "detach",
          9: "release", 10: "name", 11: "backing"}
# enum lifecycle_map_counted: the maps whose refused new keys map_full counts, in its order.
COUNTED_MAPS = ("lifecycle_counts",)


class LifecycleKey(ctypes.Structure):
    _fields_ = [("inode", ctypes.c_uint64), ("event", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


class LifecycleCountsC(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint64), ("size", ctypes.c_uint64)]


class LifecycleRecordC(ctypes.Structure):
    _fields_ = [("event", ctypes.c_uint32), ("tgid", ctypes.c_uint32), ("tid", ctypes.c_uint32),
                ("fd", ctypes.c_int32), ("kernel_stack", ctypes.c_int32), ("user_stack", ctypes.c_int32),
                ("timestamp_ns", ctypes.c_uint64), ("inode", ctypes.c_uint64), ("size", ctypes.c_uint64),
                ("cgroup_id", ctypes.c_uint64), ("comm", ctypes.c_char * COMM_LEN),
                ("exporter", ctypes.c_char * EXPORTER_LEN), ("name", ctypes.c_char * NAME_LEN),
                ("backing_inode", ctypes.c_uint64), ("backing_dev", ctypes.c_uint64)]


class StackBuildIdC(ctypes.Structure):  # struct bpf_stack_build_id (include/uapi/linux/bpf.h)
    _fields_ = [("status", ctypes.c_int32), ("build_id", ctypes.c_ubyte * 20), ("offset", ctypes.c_uint64)]


BUILD_ID_EMPTY, BUILD_ID_VALID, BUILD_ID_IP = 0, 1, 2


@dataclass(frozen=True)
class UserFrame:
    """One frame of a user allocation stack: (build id, file offset) when the kernel read the object's
    build id, else the raw address (build_id "")."""

    build_id: str
    offset: int  # the file offset into the object, or the address when build_id is ""


# The lifecycle object's stack maps (and the map from a raw user stack to its build-id one).
STACK_MAPS = ("alloc_stacks", "alloc_user_stacks", "alloc_raw_user_stacks", "build_id_stack_of_raw")
# Frames kept per allocation stack where stacks only group leaks (leaks, the live view): the innermost ones, which
# tell code paths apart; 127 (PERF_MAX_STACK_DEPTH) is for `record`'s flame graphs. It makes the three stack maps
# 2.25 MiB instead of 9, and the build-id walk stops there too.
LEAKS_STACK_DEPTH = 32


def shorten_stacks(obj, depth):
    """Before load: keep `depth` frames per stack in the lifecycle object's stack maps."""
    for name, frame in (("alloc_stacks", 8), ("alloc_raw_user_stacks", 8),
                        ("alloc_user_stacks", ctypes.sizeof(StackBuildIdC))):
        obj.map(name).value_size = depth * frame


def decode_user_stack(raw):
    """An alloc_user_stacks value -> [UserFrame], innermost first."""
    size = ctypes.sizeof(StackBuildIdC)
    frames = []
    for start in range(0, len(raw) - size + 1, size):
        entry = StackBuildIdC.from_buffer_copy(raw[start:start + size])
        if entry.status == BUILD_ID_VALID:
            frames.append(UserFrame(bytes(entry.build_id).hex(), entry.offset))
        elif entry.status == BUILD_ID_IP and entry.offset:
            frames.append(UserFrame("", entry.offset))
        elif entry.status == BUILD_ID_EMPTY:
            break
    return frames


# Each mirror and the C struct it mirrors, for the size test.
MIRRORS = {"lifecycle_key": LifecycleKey, "lifecycle_counts": LifecycleCountsC,
           "lifecycle_record": LifecycleRecordC, "bpf_stack_build_id": StackBuildIdC}


def _decode(struct_type, raw):
    if len(raw) < ctypes.sizeof(struct_type):
        raise BpfError(f"a {struct_type.__name__} from the kernel has {len(raw)} bytes, expected "
                       f"{ctypes.sizeof(struct_type)}: rebuild the BPF objects with 'make bpf'")
    return struct_type.from_buffer_copy(raw[: ctypes.sizeof(struct_type)])


def decode_counts(raw_key, raw_value):
    """A lifecycle_counts entry -> ((inode, event), (count, size))."""
    k = _decode(LifecycleKey, raw_key)
    v = _decode(LifecycleCountsC, raw_value)
    return (k.inode, EVENTS.get(k.event, str(k.event))), (v.count, v.size)


@dataclass(frozen=True)
class LifecycleRecord:
    """One lifecycle event. name: the raw bytes of dmabuf->name when the hook read it (None: no name, or
    not readable at this hook); exporter likewise. Stacks (ids into alloc_stacks, negative: none) and the
    cgroup are taken at export only."""

    tgid: int
    comm: str
    event: str
    fd: int
    timestamp_ns: int
    inode: int
    size: int
    tid: int = 0
    cgroup_id: int = 0
    exporter: str = ""
    name: Optional[bytes] = None
    kernel_stack: int = -1
    user_stack: int = -1
    backing: Optional[Tuple[int, int]] = None  # "backing": the udmabuf's memfd (inode, st_dev as stat gives it)


def decode_record(raw):
    """One ring buffer record of buffer_lifecycle.bpf.c -> LifecycleRecord."""
    r = _decode(LifecycleRecordC, raw)
    return LifecycleRecord(r.tgid, r.comm.decode("utf-8", "replace"), EVENTS.get(r.event, str(r.event)), r.fd,
                           r.timestamp_ns, r.inode, r.size, r.tid, r.cgroup_id,
                           r.exporter.decode("utf-8", "replace"), r.name or None, r.kernel_stack, r.user_stack,
                           (r.backing_inode, kernel_dev_to_user(r.backing_dev)) if r.backing_inode else None)
