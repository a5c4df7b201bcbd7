"""Reads the dma-buf inventory from the iter/dmabuf program (dmabuf_iter.bpf.c).

Needs a kernel with the dma-buf BPF iterator (6.16+). Each record is a fixed
struct dmabuf_record; the stream is decoded strictly, so a layout mismatch
between the object and this file is an error, not silent garbage.
"""
import ctypes
import os
import struct
from dataclasses import dataclass, field
from typing import Optional, Tuple

from ..bpf import open_object
from ..errors import BpfError
from . import object_path

RECORD_MAGIC = 0x64627566
NAME_LEN = 32
EXPORTER_LEN = 32
DEVICE_NAME_LEN = 32
MAX_DEVICES = 8
RECORD_NAMED = 1


class DmabufRecord(ctypes.Structure):
    """Mirror of struct dmabuf_record in dmabuf_iter.h."""

    _fields_ = [
        ("magic", ctypes.c_uint32),
        ("record_size", ctypes.c_uint32),
        ("inode", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("file_refs", ctypes.c_uint64),
        ("backing_inode", ctypes.c_uint64),
        ("backing_dev", ctypes.c_uint64),
        ("attachment_count", ctypes.c_uint32),
        ("vmapping_counter", ctypes.c_uint32),
        ("name_len", ctypes.c_uint32),
        ("devices_named", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("exporter", ctypes.c_char * EXPORTER_LEN),
        ("name", ctypes.c_char * NAME_LEN),
        ("devices", (ctypes.c_char * DEVICE_NAME_LEN) * MAX_DEVICES),
    ]


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


def kernel_dev_to_user(dev):
    """The kernel's internal dev_t (major << 20 | minor) -> the st_dev user space sees (new_encode_dev)."""
    major, minor = dev >> 20, dev & 0xFFFFF
    return os.makedev(major, minor)


def _cstring(raw):
    return bytes(raw).split(b"\0", 1)[0]


# The same layout as DmabufRecord for the fast path: the device names (the last
# MAX_DEVICES * DEVICE_NAME_LEN bytes) are skipped and read only when a record names any.
_RECORD_HEAD = struct.Struct(f"<IIQQQQQIIIIII{EXPORTER_LEN}s{NAME_LEN}s{MAX_DEVICES * DEVICE_NAME_LEN}x")


def _devices(data, offset, count):
    record = DmabufRecord.from_buffer_copy(data, offset)
    return tuple(_cstring(record.devices[i]).decode("utf-8", "replace") for i in range(min(count, MAX_DEVICES)))


def decode_records(data):
    """Bytes from the iterator -> list of Buffer.

    Tens of thousands of records are decoded per snapshot, so this is the hot
    path: struct instead of ctypes, exporter strings decoded once per distinct
    value, and each frozen Buffer filled through its __dict__ (every field set,
    as __init__ would) rather than through the dataclass's slower frozen __init__.
    """
    size = ctypes.sizeof(DmabufRecord)
    if len(data) % size:
        raise BpfError(
            f"the dma-buf iterator returned {len(data)} bytes, not a whole number of {size}-byte records: "
            "the BPF object and the Python reader disagree (rebuild with 'make bpf')"
        )
    buffers = []
    append_buffer = buffers.append
    new = object.__new__
    exporters = {}
    offset = 0
    for (magic, record_size, inode, buffer_size, file_refs, backing_inode, backing_dev, attachment_count,
         vmapping_counter, name_len, devices_named, flags, _reserved, exporter, name) in _RECORD_HEAD.iter_unpack(data):
        if magic != RECORD_MAGIC or record_size != size:
            raise BpfError("the dma-buf iterator returned a record of another layout: rebuild with 'make bpf'")
        text = exporters.get(exporter)
        if text is None:
            text = exporters[exporter] = _cstring(exporter).decode("utf-8", "replace")
        buffer = new(Buffer)
        buffer.__dict__.update({
            "inode": inode,
            "size": buffer_size,
            "exporter": text,
            "name": name[: min(name_len, NAME_LEN)] if flags & RECORD_NAMED else None,
            "file_refs": file_refs,
            "attachment_count": attachment_count,
            "attached_devices": _devices(data, offset, devices_named) if devices_named else (),
            "vmapped": vmapping_counter > 0,
            "backing_inode": backing_inode,
            "backing_dev": kernel_dev_to_user(backing_dev) if backing_inode else 0,
        })
        append_buffer(buffer)
        offset += size
    return buffers


class DmabufIterator:
    """Keeps the iterator program loaded and attached, so each read() costs one kernel pass."""

    def __init__(self):
        self._context = open_object(object_path("dmabuf_iter"))
        self._obj = self._context.__enter__()
        self._program = self._obj.program("dump_dmabufs")
        self._link = self._program.attach_iter()

    def read(self):
        return decode_records(self._program.read_iter(self._link))

    def close(self):
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_buffers():
    """Every dma-buf the kernel has, in one iterator pass."""
    with DmabufIterator() as iterator:
        return iterator.read()
