"""The snapshot's array path: decoding records into columns, and the join checked against a plain oracle."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmabuf_top.errors import BpfError
from dmabuf_top.inventory.inventory import build_inventory, stable_groups
from dmabuf_top.probes import dmabuf_iter, task_dmabufs
from dmabuf_top.probes.dmabuf_iter import BufferColumns
from dmabuf_top.inventory.types import Buffer
from dmabuf_top.probes.task_dmabufs import KIND_FD, KIND_MAP, MAGIC, RECORD, HolderColumns
from dmabuf_top.inventory.types import FdRef, Holders, MapRef
from dmabuf_top.inventory.render_snapshot import render_json
from inventory_oracle import expected_numbers, numbers_of
from test_dmabuf_iter_decode import make_record


def task_record(kind, tgid, inode, tid=None, fd=0, start=0, comm=b"proc"):
    return RECORD.pack(MAGIC, kind, tgid, tgid if tid is None else tid, inode, fd, start, start + 4096, 0, comm)


def test_dmabuf_columns_agree_with_the_objects():
    data = b"".join([
        make_record(inode=9, size=1 << 20, exporter=b"system", name=b"a", devices=(b"gpu",), file_refs=2),
        make_record(inode=3, size=4096, exporter=b"system"),
        make_record(inode=5, size=8192, exporter=b"udmabuf", backing=77),
        make_record(inode=4, size=1, exporter=b"system", name=b""),
    ])
    columns = dmabuf_iter.decode_columns(data)
    assert columns.inode.tolist() == [9, 3, 5, 4]
    assert columns.size.tolist() == [1 << 20, 4096, 8192, 1]
    assert columns.file_refs.tolist() == [2, 1, 1, 1]
    assert [columns.exporters[code] for code in columns.exporter_code] == ["system", "system", "udmabuf", "system"]
    objects = dmabuf_iter.decode_records(data)
    assert columns.pick([3, 0]) == [objects[3], objects[0]]  # a few rows: decoded one by one
    assert columns.pick(range(4)) == objects  # most rows: decoded all at once


def test_dmabuf_columns_reject_what_the_objects_reject():
    assert len(dmabuf_iter.decode_columns(b"")) == 0
    with pytest.raises(BpfError, match="make bpf"):
        dmabuf_iter.decode_columns(make_record()[:-1])
    foreign = bytearray(make_record())
    foreign[0] ^= 0xFF
    with pytest.raises(BpfError, match="another layout"):
        dmabuf_iter.decode_columns(bytes(foreign))


def test_task_columns_remove_the_same_duplicates_as_the_objects():
    data = (task_record(KIND_MAP, 7, 100, tid=7, start=0x1000) + task_record(KIND_MAP, 7, 100, tid=8, start=0x1000)
            + task_record(KIND_FD, 7, 100, tid=7, fd=3) + task_record(KIND_FD, 7, 100, tid=9, fd=3)
            + task_record(KIND_FD, 7, 100, tid=7, fd=3) + task_record(KIND_FD, 8, 101, fd=4, comm=b"other\0junk")
            + task_record(KIND_FD, 7, 102, tid=7, fd=5, comm=b"renamed"))
    columns = task_dmabufs.decode_columns(data)
    fds, maps, comms = task_dmabufs.decode_records(data)
    assert sorted(zip(columns.fd_pid.tolist(), columns.fd_inode.tolist())) == sorted((r.pid, r.inode) for r in fds)
    assert list(zip(columns.map_pid.tolist(), columns.map_inode.tolist())) == [(r.pid, r.inode) for r in maps]
    assert columns.comms == comms == {7: b"proc", 8: b"other"}


def test_no_records_no_holders():
    columns = task_dmabufs.decode_columns(b"")
    assert (len(columns.fd_pid), len(columns.map_pid), columns.comms) == (0, 0, {})
    inventory = build_inventory(dmabuf_iter.decode_columns(b""), columns, "iterator", "iterator")
    assert (inventory.buffers, inventory.processes, inventory.exporters) == ([], [], [])


def test_task_columns_reject_what_the_objects_reject():
    with pytest.raises(BpfError):
        task_dmabufs.decode_columns(task_record(KIND_FD, 1, 1)[:-1])
    with pytest.raises(BpfError, match="another layout"):
        task_dmabufs.decode_columns(RECORD.pack(0xDEAD, KIND_FD, 1, 1, 1, 0, 0, 0, 0, b""))
    with pytest.raises(BpfError, match="unknown kind 9"):
        task_dmabufs.decode_columns(task_record(9, 1, 1))


def test_stable_groups():
    keys = np.array([5, 1, 5, 3, 1, 1], dtype=np.uint64)
    distinct, inverse = stable_groups(keys)
    assert distinct.tolist() == [1, 3, 5]
    assert distinct[inverse].tolist() == keys.tolist()
    assert [len(part) for part in stable_groups(np.zeros(0, dtype=np.uint64))] == [0, 0]


populations = st.integers(min_value=0, max_value=60).flatmap(lambda count: st.tuples(
    st.lists(st.integers(1, 1 << 40), min_size=count, max_size=count),  # sizes
    st.lists(st.sampled_from(["system", "udmabuf", None]), min_size=count, max_size=count),
    # refs: (is_fd, pid, inode); inodes past the buffers' are refs to buffers the inventory misses
    st.lists(st.tuples(st.booleans(), st.integers(1, 6), st.integers(1, count + 3)), max_size=4 * count + 4),
))


@settings(max_examples=300, deadline=None)
@given(populations)
def test_join_matches_the_oracle(population):
    sizes, exporters, refs = population
    buffers = [Buffer(inode=inode, size=size, exporter=exporter, name=None, file_refs=len(refs), attachment_count=0)
               for inode, (size, exporter) in enumerate(zip(sizes, exporters), start=1)]
    fds = [(pid, inode) for is_fd, pid, inode in refs if is_fd]
    maps = [(pid, inode) for is_fd, pid, inode in refs if not is_fd]
    holders = Holders([FdRef(pid, number, inode) for number, (pid, inode) in enumerate(fds)],
                      [MapRef(pid, inode, 0, 4096) for pid, inode in maps], {})
    inventory = build_inventory(buffers, holders, "iterator", "iterator")
    assert numbers_of(inventory) == expected_numbers(buffers, fds, maps)
    for process in inventory.processes:
        assert all(type(value) is int for value in (process.pid, process.rss, process.pss, process.fd_refs))
    json.loads(render_json(inventory))  # plain ints throughout: JSON accepts every value


def test_columns_and_objects_give_the_same_inventory():
    buffers = [Buffer(inode=i, size=4096 * i, exporter="system", name=None, file_refs=1, attachment_count=0)
               for i in range(1, 50)]
    holders = Holders([FdRef(i % 4, i, i) for i in range(1, 50)], [MapRef(2, 7, 0, 4096)], {2: b"two"})
    from_objects = build_inventory(buffers, holders, "iterator", "iterator")
    from_columns = build_inventory(BufferColumns.from_buffers(buffers), HolderColumns.from_holders(holders),
                                   "iterator", "iterator")
    assert render_json(from_objects) == render_json(from_columns)
