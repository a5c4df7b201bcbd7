"""Decoding the task iterators' records: layout check, duplicates, kinds."""
import pytest

from dmabuf_top.bpf import struct_size_in_object
from dmabuf_top.errors import BpfError
from dmabuf_top.probes import object_path
from dmabuf_top.probes.task_dmabufs import KIND_FD, KIND_MAP, MAGIC, RECORD, decode_records
from dmabuf_top.inventory.types import FdRef, MapRef


def record(kind, tgid, inode, tid=None, fd=0, start=0, end=0, pgoff=0, comm=b"proc"):
    return RECORD.pack(MAGIC, kind, tgid, tgid if tid is None else tid, inode, fd, start, end, pgoff, comm)


def test_mirror_matches_the_compiled_struct():
    assert struct_size_in_object(object_path("task_dmabufs"), "task_dmabuf_record") == RECORD.size


def test_fds_and_maps():
    data = record(KIND_FD, 7, 100, fd=3) + record(KIND_MAP, 7, 100, start=0x1000, end=0x3000, pgoff=1)
    fds, maps, comms = decode_records(data)
    assert fds == [FdRef(7, 3, 100)]
    assert maps == [MapRef(7, 100, 0x1000, 0x3000, 1)]
    assert comms == {7: b"proc"}


def test_a_mapping_seen_through_two_threads_counts_once_and_own_fd_tables_count():
    data = (record(KIND_MAP, 7, 100, tid=7, start=0x1000) + record(KIND_MAP, 7, 100, tid=8, start=0x1000)
            + record(KIND_FD, 7, 100, tid=7, fd=3) + record(KIND_FD, 7, 100, tid=9, fd=3))
    fds, maps, _ = decode_records(data)
    assert len(maps) == 1 and len(fds) == 2


def test_torn_or_foreign_streams_are_errors():
    with pytest.raises(BpfError):
        decode_records(record(KIND_FD, 1, 1)[:-1])
    with pytest.raises(BpfError):
        decode_records(RECORD.pack(0xDEAD, KIND_FD, 1, 1, 1, 0, 0, 0, 0, b""))
    with pytest.raises(BpfError):
        decode_records(record(9, 1, 1))
