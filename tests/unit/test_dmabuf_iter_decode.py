import ctypes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_top.bpf import struct_size_in_object
from dmabuf_top.errors import BpfError
from dmabuf_top.probes import object_path
from dmabuf_top.probes.dmabuf_iter import (
    MAX_DEVICES,
    NAME_LEN,
    RECORD_MAGIC,
    RECORD_NAMED,
    DmabufRecord,
    decode_records,
)


def make_record(inode=7, size=4096, exporter=b"system", name=None, devices=(), file_refs=1, vmap=0, backing=0):
    record = DmabufRecord()
    record.magic = RECORD_MAGIC
    record.record_size = ctypes.sizeof(DmabufRecord)
    record.inode = inode
    record.size = size
    record.file_refs = file_refs
    record.backing_inode = backing
    record.exporter = exporter
    if name is not None:
        ctypes.memmove(ctypes.addressof(record) + DmabufRecord.name.offset, name, len(name))
        record.name_len = len(name)
        record.flags |= RECORD_NAMED
    record.attachment_count = len(devices)
    record.devices_named = min(len(devices), MAX_DEVICES)
    for index, device in enumerate(devices[:MAX_DEVICES]):
        record.devices[index].value = device
    record.vmapping_counter = vmap
    return bytes(record)


def test_ctypes_mirror_matches_the_compiled_struct():
    assert struct_size_in_object(object_path("dmabuf_iter"), "dmabuf_record") == ctypes.sizeof(DmabufRecord)


def test_decodes_every_field():
    data = make_record(inode=42, size=1 << 20, exporter=b"udmabuf", name=b"model", devices=(b"npu0", b"gpu"),
                       file_refs=3, vmap=1, backing=99)
    (buffer,) = decode_records(data)
    assert (buffer.inode, buffer.size, buffer.exporter, buffer.name) == (42, 1 << 20, "udmabuf", b"model")
    assert buffer.attached_devices == ("npu0", "gpu")
    assert buffer.attachment_count == 2
    assert buffer.file_refs == 3 and buffer.vmapped and buffer.backing_inode == 99


def test_several_records_in_order():
    data = b"".join(make_record(inode=i) for i in range(5))
    assert [b.inode for b in decode_records(data)] == list(range(5))


def test_unnamed_and_empty_name_differ():
    unnamed, empty = decode_records(make_record() + make_record(name=b""))
    assert unnamed.name is None and unnamed.name_text is None
    assert empty.name == b"" and empty.name_text == ""


def test_empty_stream_is_no_buffers():
    assert decode_records(b"") == []


def test_torn_stream_is_an_error_that_says_rebuild():
    with pytest.raises(BpfError, match="make bpf"):
        decode_records(make_record()[:-1])


def test_foreign_layout_is_rejected():
    data = bytearray(make_record())
    data[0] ^= 0xFF
    with pytest.raises(BpfError, match="another layout"):
        decode_records(bytes(data))


@given(st.binary(min_size=0, max_size=NAME_LEN - 1).filter(lambda b: b"\0" not in b))
def test_hostile_names_come_back_byte_for_byte(name):
    (buffer,) = decode_records(make_record(name=name))
    assert buffer.name == name
    assert isinstance(buffer.name_text, str)
