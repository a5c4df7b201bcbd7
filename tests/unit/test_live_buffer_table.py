"""The Buffers pane on columns (live/buffer_table.py) shows exactly what building every Row would show.

The fast path sorts and filters arrays and builds Rows only for what is read; the
reference here builds every Row, filters by each row's search text and sorts with
model.sort_rows. They must agree row for row and on the rendered screen, for every
sort key of the pane, both directions and several filters, with new and freed
buffers, unknown rates and hostile names in the population. The Rows themselves are
checked against the inventory's own objects (BufferEntry, Buffer), not against the
table that made them.
"""
import ctypes
import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from live_fixtures import HOSTILE, LIVE_HOOKS
from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.live.buffer_table import BufferTable, NameCache
from dmabuf_top.live.jsonout import render_json
from dmabuf_top.live.columns import COLUMNS, IO_COLUMNS
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.view import ViewState, sort_rows, visible_rows
from dmabuf_top.sampler import Sample
from dmabuf_top.live.screen import line_text, render, render_table
from dmabuf_top.probes.dmabuf_iter import DmabufRecord, RECORD_MAGIC, decode_columns
from dmabuf_top.inventory.types import Buffer
from dmabuf_top.probes.iopaths import Counters, Target
from dmabuf_top.inventory.types import FdRef, Holders, MapRef
from dmabuf_top.text import terminal_safe
from dmabuf_top.trace_model import TraceSnapshot

BUFFER_KEYS = [c.key for c in COLUMNS["buffers"]]
FILTERS = ["", "system", "20(", "-7", "\\x1b", "nothing-like-this"]
EXPORTERS = ["system", "udmabuf", "Qcom-heap", "?", "zz"]


def _record(buffer, name):
    """An iter/dmabuf record for `buffer`, as the kernel program writes it."""
    return DmabufRecord(magic=RECORD_MAGIC, record_size=ctypes.sizeof(DmabufRecord), inode=buffer.inode,
                        size=buffer.size, file_refs=buffer.file_refs, attachment_count=buffer.attachment_count,
                        name_len=len(name), flags=0 if buffer.name is None else 1,
                        exporter=buffer.exporter.encode(), name=name)


def population(count, seed, gone=(), added=()):
    """`count` buffers with repeated sizes, several exporters, unnamed, empty and hostile names,
    0-3 holders; as raw iterator records (the live path) decoded into columns."""
    buffers, fds, maps = [], [], []
    for i in range(count):
        inode = 1000 + (i * 7919 + seed) % 100_000
        if inode in gone:
            continue
        name = [None, b"", HOSTILE, b"weights-%d" % (i % 13), b"Buf-%d" % i][i % 5]
        buffers.append(Buffer(inode=inode, size=4096 * (1 + i % 9), exporter=EXPORTERS[i % len(EXPORTERS)],
                              name=name, file_refs=1, attachment_count=i % 3))
        for pid in range(10 + i % 4, 10 + i % 4 + i % 3):
            fds.append(FdRef(pid, 100 + i, inode))
        if i % 6 == 0:
            maps.append(MapRef(20, inode, 0x1000 * (i + 1), 0x1000 * (i + 2)))
    buffers += list(added)
    data = b"".join(bytes(_record(b, b.name or b"")) for b in buffers)
    holders = Holders(fds, maps, {10: b"loader", 11: b"\x1b[31mnpu", 12: b"cam", 13: b"x" * 15, 20: b"mapper"})
    return build_inventory(decode_columns(data), holders, "iterator", "iterator")


def trace(step, inodes):
    """Reads into a few buffers, growing each step; the second is first read at step 2 (no rate there yet)."""
    by_target = {}
    for k, inode in enumerate(inodes):
        if k == 1 and step < 2:
            continue
        by_target[Target(inode, 0, "read", "dmabuf", False)] = Counters(calls=step, bytes=step * (k + 1) * 4096)
    return TraceSnapshot(by_target, {(10, "read"): Counters(calls=step, bytes=step * 4096)}, {}, {}, {}, {}, 0,
                         list(LIVE_HOOKS))


def frames(count=40, seed=3):
    """Three frames: first (no rates), second (rates; one buffer gone, one new), third."""
    model = LiveModel(1.0, kernel="test")
    base = population(count, seed)
    inodes = [entry.inode for entry in base.buffers][:6]
    gone = {inodes[-1]}
    fresh = Buffer(inode=7, size=8192, exporter="system", name=b"fresh", file_refs=1, attachment_count=0)
    out = [model.update(Sample(1.0, 1.8e9, base, trace(1, inodes), {}, True))]
    out.append(model.update(Sample(2.0, 1.8e9 + 1, population(count, seed, gone, [fresh]), trace(2, inodes), {}, True)))
    out.append(model.update(Sample(3.5, 1.8e9 + 2.5, population(count, seed), trace(3, inodes), {}, True)))
    return out


def reference(frame, view):
    """Every Row built, filtered by its search text, sorted by model.sort_rows: the slow, obvious way."""
    rows = list(frame.rows["buffers"])
    if view.filter:
        rows = [row for row in rows if view.filter.lower() in row.search]
    return sort_rows(rows, view.sort["buffers"], view.reverse["buffers"])


def as_list(frame):
    """The same frame with the Buffers pane as a plain list of Rows (model.visible_rows' list path)."""
    return dataclasses.replace(frame, rows={**frame.rows, "buffers": list(frame.rows["buffers"])})


@pytest.mark.parametrize("key", BUFFER_KEYS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("needle", FILTERS)
def test_visible_rows_are_the_reference_order_for_every_key_direction_and_filter(key, reverse, needle):
    for frame in frames():
        view = ViewState(filter=needle)
        view.sort["buffers"], view.reverse["buffers"] = key, reverse
        fast = visible_rows(frame, view)
        assert [row.key for row in fast] == [row.key for row in reference(frame, view)]
        assert len(fast) == len(reference(frame, view))


@pytest.mark.parametrize("key", BUFFER_KEYS)
@pytest.mark.parametrize("reverse", [False, True])
def test_the_screen_is_the_same_as_from_every_row_built(key, reverse):
    for frame in frames(count=300):  # many more rows than fit: only the window is built
        for needle in ("", "weights"):
            for scroll in (0, 37, 10_000):
                views = []
                for _ in range(2):
                    view = ViewState(filter=needle, scroll=scroll)
                    view.sort["buffers"], view.reverse["buffers"] = key, reverse
                    views.append(view)
                fast = [line_text(line) for line in render(frame, views[0], 200, 30)]
                full = [line_text(line) for line in render(as_list(frame), views[1], 200, 30)]
                assert fast == full
                assert views[0].scroll == views[1].scroll


def test_only_the_visible_rows_are_built():
    frame = frames(count=2000)[1]
    render(frame, ViewState(), 200, 30)
    table = frame.rows["buffers"]
    assert isinstance(table, BufferTable) and len(table) > 2000 - 2
    assert 0 < len(table._rows) <= 30


def test_json_and_batch_table_are_the_same_as_from_every_row_built():
    for frame in frames():
        assert render_json(frame) == render_json(as_list(frame))
        view = ViewState()
        view.sort["buffers"] = "name"
        assert render_table(frame, "buffers", view) == render_table(as_list(frame), "buffers", view)


def test_rows_match_the_inventorys_own_objects():
    """Each Row's static cells from the BufferEntry/Buffer objects of the same inventory."""
    inventory = population(60, 5)
    frame = LiveModel(1.0).update(Sample(1.0, 1.8e9, inventory, trace(1, []), {}, True))
    comms = {p.pid: terminal_safe(p.comm) for p in inventory.processes}
    rows = {row.key: row for row in frame.rows["buffers"]}
    assert len(rows) == len(inventory.buffers)
    for entry in inventory.buffers:
        b = entry.buffer
        row = rows[b.inode]
        holders = " ".join(f"{pid}({comms[pid]})" for pid in entry.holders)
        assert row.values == {"inode": b.inode, "exporter": b.exporter, "size": b.size,
                              "attachments": b.attachment_count, "holders": holders, "name": terminal_safe(b.name),
                              **dict.fromkeys(IO_COLUMNS)}
        assert row.extra["name_raw"] == b.name and row.extra["holder_refs"] == entry.holders
        assert row.search == f"{b.inode} {b.exporter} {terminal_safe(b.name)} {holders}".lower()


def test_rates_new_and_freed_on_the_table():
    first, second, third = frames()
    rows = {row.key: row for row in second.rows["buffers"]}
    assert rows[7].state == "new"
    read = [row for row in rows.values() if row.values["read"]]
    assert read and all(row.extra["paths"]["read"]["bytes"] == row.values["read"] for row in read)
    # a buffer first read in this interval has no rate yet; one with no traced I/O reads 0
    assert sum(row.values["read"] is None for row in rows.values() if row.state != "freed") == 1
    assert any(row.values["read"] == 0 for row in rows.values())
    freed = [row for row in rows.values() if row.state == "freed"]
    assert len(freed) == 1 and all(freed[0].values[c] is None for c in IO_COLUMNS)
    assert {row.key: row.state for row in third.rows["buffers"]}[7] == "freed"
    assert all(row.values["read"] is None for row in first.rows["buffers"])


def test_pid_shows_only_what_the_process_holds():
    inventory = population(60, 5)
    model = LiveModel(1.0, pid=20)
    frame = model.update(Sample(1.0, 1.8e9, inventory, trace(1, []), {}, True))
    held = sorted(inventory.process(20).buffers)
    assert sorted(row.key for row in frame.rows["buffers"]) == held
    assert sum(e.buffers for e in frame.exporters) == len(held)


def test_name_cache_escapes_once_and_stays_bounded():
    cache = NameCache(limit=3)
    assert cache(HOSTILE) == terminal_safe(HOSTILE) and cache(None) == "<unnamed>"
    for i in range(10):
        cache(b"n%d" % i)
    assert len(cache._safe) <= 3


names = st.one_of(st.none(), st.binary(max_size=31))


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(names, st.integers(1, 5), st.sampled_from(EXPORTERS), st.integers(0, 2),
                          st.lists(st.integers(10, 13), max_size=3, unique=True)), min_size=1, max_size=40),
       st.sampled_from(BUFFER_KEYS), st.booleans(), st.sampled_from(["", "a", "1", "x", "\\"]))
def test_any_population_sorts_and_filters_as_the_reference(spec, key, reverse, needle):
    buffers, fds = [], []
    for i, (name, pages, exporter, attachments, pids) in enumerate(spec):
        buffers.append(Buffer(inode=50 + i, size=4096 * pages, exporter=exporter, name=name, file_refs=1,
                              attachment_count=attachments))
        fds += [FdRef(pid, i, 50 + i) for pid in pids]
    data = b"".join(bytes(_record(b, b.name or b"")) for b in buffers)
    inventory = build_inventory(decode_columns(data), Holders(fds, [], {10: b"a", 11: b"\xff"}), "iterator", "iterator")
    model = LiveModel(1.0)
    model.update(Sample(1.0, 0.0, inventory, trace(1, [50]), {}, True))
    frame = model.update(Sample(2.0, 1.0, inventory, trace(2, [50, 51]), {}, True))
    view = ViewState(filter=needle)
    view.sort["buffers"], view.reverse["buffers"] = key, reverse
    assert [row.key for row in visible_rows(frame, view)] == [row.key for row in reference(frame, view)]
    assert json.loads(render_json(frame, view)) == json.loads(render_json(as_list(frame), view))


@settings(deadline=None, max_examples=50)
@given(st.lists(st.tuples(names, st.integers(0, 2**32 - 1), st.integers(0, 1), st.integers(0, (1 << 32) - 1)),
                min_size=1, max_size=20))
def test_columns_read_straight_from_records_agree_with_decode_records(spec):
    """BufferColumns.names/attachment_counts/backing_files (the live view's) = the fields of decode_records."""
    from dmabuf_top.probes.dmabuf_iter import decode_records

    data = b""
    for i, (name, attachments, udmabuf, dev) in enumerate(spec):
        raw = _record(Buffer(inode=10 + i, size=4096, exporter="udmabuf", name=name, file_refs=1,
                             attachment_count=attachments % 1000), name or b"")
        raw.name_len = len((name or b"").split(b"\0")[0])  # the kernel counts the bytes before the first NUL
        if udmabuf:
            raw.backing_inode, raw.backing_dev = 5000 + i, dev
        data += bytes(raw)
    columns, buffers = decode_columns(data), decode_records(data)
    assert columns.names() == [b.name for b in buffers]
    assert columns.attachment_counts().tolist() == [b.attachment_count for b in buffers]
    assert columns.backing_files() == {(b.backing_inode, b.backing_dev): b.inode for b in buffers if b.backing_inode}


def test_texts_are_reused_only_while_records_holdings_and_comms_are_unchanged():
    def inventory(rename=False, holder=False, comm=b"loader"):
        buffers = [Buffer(inode=50 + i, size=4096, exporter="system", name=b"old-%d" % i, file_refs=1,
                          attachment_count=0) for i in range(20)]
        if rename:
            buffers[3] = dataclasses.replace(buffers[3], name=b"renamed")
        fds = [FdRef(10, 100 + i, 50 + i) for i in range(20)] + [FdRef(30, 6, 69)] + ([FdRef(30, 7, 55)] if holder else [])
        data = b"".join(bytes(_record(b, b.name)) for b in buffers)
        return build_inventory(decode_columns(data), Holders(fds, [], {10: comm, 30: b"late"}), "iterator", "iterator")

    model = LiveModel(1.0)

    def shown(inv, needle, key="name"):
        frame = model.update(Sample(len(shown.frames) + 1.0, 0.0, inv, trace(1, []), {}, True))
        shown.frames.append(frame)
        view = ViewState(filter=needle)
        view.sort["buffers"] = key
        return [row.key for row in visible_rows(frame, view)]
    shown.frames = []

    assert len(shown(inventory(), "old-")) == 20
    assert len(shown(inventory(), "old-")) == 20
    first, second = (frame.rows["buffers"] for frame in shown.frames)
    assert second._live_search is first._live_search  # the same records and holders: nothing rebuilt
    assert shown(inventory(rename=True), "renamed") == [53]
    assert shown(inventory(rename=True, holder=True), "30(late)") == [69, 55]  # old-19, old-5: the same processes, a new holding
    assert shown(inventory(rename=True, holder=True, comm=b"other"), "10(other)", "holders")[:2] == [50, 51]
    assert shown(inventory(rename=True, holder=True, comm=b"other"), "10(loader)") == []
