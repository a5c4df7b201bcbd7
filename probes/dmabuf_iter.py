"""Reads the dma-buf inventory from the iter/dmabuf program (dmabuf_iter.bpf.c).

Needs a kernel with the dma-buf BPF iterator (6.16+). Each record is a fixed
struct dmabuf_record; the stream is decoded strictly, so a layout mismatch
between the object and this file is an error, not silent garbage.

Two decodings of one pass: `decode_records` into Buffer objects (the recorder,
the tracer, the demo), `decode_columns` into arrays for the snapshot's join at
tens of thousands of buffers (numpy).
"""
import ctypes
import struct
from typing import Optional, Sequence

import numpy as np

from ..bpf import open_object
from ..errors import BpfError
from ..inventory.types import Buffer
from ..kernelfs import kernel_dev_to_user
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


# Where decode_columns finds its columns: word indices into a record seen as 64-bit words.
_RECORD_WORDS = ctypes.sizeof(DmabufRecord) // 8
_INODE_WORD, _SIZE_WORD, _FILE_REFS_WORD = (getattr(DmabufRecord, name).offset // 8
                                            for name in ("inode", "size", "file_refs"))
_EXPORTER_OFFSET = DmabufRecord.exporter.offset
_EXPORTER_WORDS = range(_EXPORTER_OFFSET // 8, (_EXPORTER_OFFSET + EXPORTER_LEN) // 8)


class BufferColumns:
    """Buffers as arrays, for joining ten thousand of them without ten thousand objects.

    inode, size (uint64), file_refs (int64, -1 where the source cannot know),
    exporter_code (index into `exporters`, whose entries are str or
    None). The Buffer objects themselves are built only when asked for (`pick`).
    """

    def __init__(self, inode, size, file_refs, exporter_code, exporters: Sequence[Optional[str]],
                 buffers=None, data=None):
        self.inode, self.size, self.file_refs = inode, size, file_refs
        self.exporter_code, self.exporters = exporter_code, tuple(exporters)
        self._buffers = buffers  # list of Buffer, in row order, once known
        self._data = data  # the iterator's records, to decode rows from

    def __len__(self):
        return len(self.inode)

    @classmethod
    def from_buffers(cls, buffers):
        """Columns over Buffer objects a slower source already made (None fields become -1)."""
        buffers = list(buffers)
        codes = {}
        return cls(
            np.array([b.inode for b in buffers], dtype=np.uint64),
            np.array([b.size for b in buffers], dtype=np.uint64),
            np.array([-1 if b.file_refs is None else b.file_refs for b in buffers], dtype=np.int64),
            np.array([codes.setdefault(b.exporter, len(codes)) for b in buffers], dtype=np.intp),
            list(codes), buffers=buffers)

    def pick(self, rows) -> list:
        """The Buffer of each row in `rows` (a sequence of indices), in that order."""
        rows = [int(row) for row in rows]
        if self._buffers is None and len(rows) * 4 < len(self):
            size = _RECORD_HEAD.size
            return [decode_records(self._data[row * size:(row + 1) * size])[0] for row in rows]
        if self._buffers is None:
            self._buffers = decode_records(self._data)
        return [self._buffers[row] for row in rows]

    def records(self) -> Optional[bytes]:
        """The iterator's raw records behind these columns (None for columns over a slower source's objects)."""
        return self._data

    # Columns the live view sorts and joins on, read straight from the records (no Buffer per row).

    def _u32_column(self, offset):
        return np.frombuffer(self._data, dtype="<u4").reshape(len(self), -1)[:, offset // 4]

    def attachment_counts(self):
        """attachment_count of every row as int64 (-1 where the source cannot know)."""
        if self._data is None:
            return np.array([-1 if b.attachment_count is None else b.attachment_count for b in self._buffers],
                            dtype=np.int64)
        return self._u32_column(DmabufRecord.attachment_count.offset).astype(np.int64)

    def names(self) -> list:
        """Every row's name (bytes; None for a buffer never named), as Buffer.name, without whole records."""
        if self._data is None:
            return [b.name for b in self._buffers]
        size = ctypes.sizeof(DmabufRecord)
        records = np.frombuffer(self._data, dtype=np.uint8).reshape(-1, size)
        raw = records[:, DmabufRecord.name.offset:DmabufRecord.name.offset + NAME_LEN].copy().view(f"V{NAME_LEN}")
        named = (self._u32_column(DmabufRecord.flags.offset) & RECORD_NAMED).astype(bool).tolist()
        lengths = np.minimum(self._u32_column(DmabufRecord.name_len.offset), NAME_LEN).tolist()
        # the name ends at name_len, as decode_records cuts it
        return [text[:length] if is_named else None
                for text, length, is_named in zip(raw.ravel().tolist(), lengths, named)]

    def backing_files(self) -> dict:
        """{(backing inode, st_dev as user space sees it): buffer inode} for the udmabufs (their memfds)."""
        if self._data is None:
            return {(b.backing_inode, b.backing_dev): b.inode for b in self._buffers if b.backing_inode}
        words = np.frombuffer(self._data, dtype="<u8").reshape(len(self), -1)
        backing = words[:, DmabufRecord.backing_inode.offset // 8]
        rows = np.flatnonzero(backing)
        devs = words[rows, DmabufRecord.backing_dev.offset // 8].tolist()
        return {(inode, kernel_dev_to_user(dev)): buffer
                for inode, dev, buffer in zip(backing[rows].tolist(), devs, self.inode[rows].tolist())}


def decode_columns(data) -> BufferColumns:
    """Bytes from the iterator -> BufferColumns, with the checks of decode_records, in a few array passes.

    The records are viewed as a 2-D array of plain integers and every column is
    taken from it as a 1-D array: numpy's structured-dtype paths (masking or
    comparing whole records) cost microseconds per record on the lab's emulated CPU.
    """
    size = ctypes.sizeof(DmabufRecord)
    if len(data) % size:
        decode_records(data)  # raises the torn-stream error
    words = np.frombuffer(data, dtype="<u8").reshape(-1, _RECORD_WORDS)
    if not len(words):
        return BufferColumns(words[:, 0], words[:, 0], np.zeros(0, np.int64), np.zeros(0, np.intp), (), buffers=[])
    header = words[:, 0]  # magic in the low half, record_size in the high half (little-endian)
    if not np.all(header == np.uint64(RECORD_MAGIC | size << 32)):
        raise BpfError("the dma-buf iterator returned a record of another layout: rebuild with 'make bpf'")
    # Buffers of one exporter tend to come in runs: decode one name per run, not per buffer.
    changed = np.zeros(len(words), dtype=bool)
    changed[0] = True
    for word in _EXPORTER_WORDS:
        column = words[:, word]
        changed[1:] |= column[1:] != column[:-1]
    starts = np.flatnonzero(changed)
    codes: dict = {}
    run_codes = []
    for start in starts.tolist():
        offset = start * size + _EXPORTER_OFFSET
        text = _cstring(data[offset:offset + EXPORTER_LEN]).decode("utf-8", "replace")
        run_codes.append(codes.setdefault(text, len(codes)))
    exporter_code = np.repeat(np.array(run_codes, dtype=np.intp), np.diff(np.append(starts, len(words))))
    return BufferColumns(words[:, _INODE_WORD], words[:, _SIZE_WORD], words[:, _FILE_REFS_WORD].astype(np.int64),
                         exporter_code, list(codes), data=data)


class DmabufIterator:
    """Keeps the iterator program loaded and attached, so each read() costs one kernel pass."""

    def __init__(self):
        self._context = open_object(object_path("dmabuf_iter"))
        self._obj = self._context.__enter__()
        self._program = self._obj.program("dump_dmabufs")
        self._link = self._program.attach_iter()

    def read(self):
        return decode_records(self._program.read_iter(self._link))

    def read_columns(self) -> BufferColumns:
        """The same pass as read(), decoded into arrays (Buffer objects only on demand)."""
        return decode_columns(self._program.read_iter(self._link))

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
