"""The Leaks pane as a LeakTable (live/leak_rows.py): the same rows as `dmabuf-top leaks` groups them, in the order
view.sort_rows gives, with text built only for the groups shown. No kernel."""
import os

import pytest

from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.inventory.types import Buffer, FdRef, Holders, MapRef
from dmabuf_top.leaks import Creation, LeakTracker
from dmabuf_top.live.columns import COLUMNS, AgeAtLeast
from dmabuf_top.live.leak_rows import LeakTable
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.screen import render
from dmabuf_top.live.view import ViewState, sort_rows, visible_rows
from dmabuf_top.render_leaks import creator_text
from dmabuf_top.sampler import Sample
from dmabuf_top.text import terminal_safe

S = 1_000_000_000
STACK = ("dma_buf_export", "system_heap_allocate", "ioctl+0x1b (libc.so.6)", "alloc_frame+0x4 (cam)")


def population(groups, per_group=1):
    """`groups` named groups of `per_group` buffers held by fd or mapping by three processes, a kernel-only buffer
    attached to a device and one held by nobody at all."""
    buffers, fds, maps = [], [], []
    inode = 100
    for group in range(groups):
        for _ in range(per_group):
            inode += 1
            buffers.append(Buffer(inode=inode, size=4096 * (1 + group % 3), exporter="system",
                                  name=b"g%d" % group, file_refs=1, attachment_count=0))
            (maps if inode % 4 == 0 else fds).append((10 + inode % 3, inode))
    buffers.append(Buffer(inode=7, size=8192, exporter="system", name=b"kept", file_refs=0, attachment_count=1,
                          attached_devices=("vgem",)))
    buffers.append(Buffer(inode=8, size=8192, exporter="system", name=b"kept", file_refs=0, attachment_count=0))
    holders = Holders([FdRef(pid, 3, inode) for pid, inode in fds],
                      [MapRef(pid, inode, 0, 4096) for pid, inode in maps],
                      {10: b"cam", 11: b"\x1b]0;x\x07gpu"})  # 12 has no comm
    return buffers, holders


def frames(groups=40, per_group=3, min_age=0.0):
    """A first sample with the first buffer of each group, a second with all, creations for half the rest."""
    buffers, holders = population(groups, per_group)
    first = [b for b in buffers if (b.inode - 101) % per_group == 0 or b.inode < 100]
    made = {b.inode: Creation(b.inode, os.getpid() if b.inode % 2 else (1 << 22) + 7, "cam", 101 * S,
                              stack=STACK, kernel_frames=2)
            for b in buffers if b not in first and b.inode % 5 == 0}
    model = LiveModel(1.0, min_age=min_age)
    model.update(Sample(100.0, 0.0, build_inventory(first, holders, "iterator", "iterator")))
    return model.update(Sample(104.0, 0.0, build_inventory(buffers, holders, "iterator", "iterator"), creations=made))


def every_row_sorted(frame, view):
    """Every Row built, filtered by its search text, sorted by view.sort_rows: the slow, obvious way."""
    rows = list(frame.rows["leaks"])
    if view.filter:
        rows = [row for row in rows if view.filter.lower() in row.search]
    return sort_rows(rows, view.sort["leaks"], view.reverse["leaks"])


@pytest.mark.parametrize("key", [column.key for column in COLUMNS["leaks"]])
@pytest.mark.parametrize("reverse", [False, True])
# a holder's comm, a holder's kind, a kernel-only buffer, a number, and two that span cells (holders -> stack,
# growth -> age -> creator): matched in the texts of the cells, as a Row's search text would match them
@pytest.mark.parametrize("needle", ["", "cam", "map", "no process", "4096", "(cam) (", "8192 4.0 before"])
def test_order_is_sort_rows_order_for_every_key_direction_and_filter(key, reverse, needle):
    frame = frames()
    view = ViewState(pane="leaks", filter=needle)
    view.sort["leaks"], view.reverse["leaks"] = key, reverse
    assert [row.key for row in visible_rows(frame, view)] == [row.key for row in every_row_sorted(frame, view)]


def test_rows_say_what_the_leaks_report_says():
    """Each row from the report `leaks` prints: count, bytes, growth, the oldest's age and creator, every holder."""
    buffers, holders = population(30, 4)
    tracker = LeakTracker()
    tracker.observe(build_inventory(buffers[::2], holders, "iterator", "iterator"), 0)
    last = build_inventory(buffers, holders, "iterator", "iterator")
    made = {b.inode: Creation(b.inode, 1 << 23, "gone", S // 2, stack=STACK, kernel_frames=2)
            for b in buffers if b.inode % 7 == 0}
    tracker.observe(last, 2 * S, made)
    report = tracker.report(last, 2 * S, 0.5, made)
    table = LeakTable(tracker.columns(last, 2 * S, 0.5, made), last.arrays,
                      {process.pid: process.comm for process in last.processes})
    rows = {row.key: row for row in table}
    assert len(rows) == len(report.groups)
    for group in report.groups:
        row = rows[" ".join(str(part) for part in group.key)]
        oldest = group.buffers[0]
        assert (row.values["buffers"], row.values["bytes"], row.values["growth"]) == (
            group.count, group.bytes, group.growth[1])
        assert row.values["age"] == oldest.age_s and isinstance(row.values["age"], AgeAtLeast) != oldest.age_known
        assert row.values["creator"].startswith(creator_text(oldest))
        assert row.extra["inodes"] == [leak.inode for leak in group.buffers]
        said = []
        for leak in group.buffers:
            labels = [f"{h.pid}({terminal_safe(h.comm, none='?')})" for h in leak.fd_holders]
            labels += [f"{h.pid}({terminal_safe(h.comm, none='?')}) map" for h in leak.map_holders]
            if leak.kernel_holds:
                labels.append("no process: " + ", ".join(leak.kernel_holds))
            said += [label for label in labels if label not in said]
        assert row.values["holders"] == " ".join(said)


def test_only_the_groups_shown_get_text(monkeypatch):
    """The work per refresh does not grow with the groups off screen: a Row (creator, holders, stack) is built for
    the lines the screen has, whether there are 50 groups or 2,000, and holders are looked for for those only."""
    built, holders_of = [], []
    real_row, real_holders = LeakTable._row, LeakTable._holders
    monkeypatch.setattr(LeakTable, "_row", lambda self, group, holders: built.append(group) or real_row(
        self, group, holders))
    monkeypatch.setattr(LeakTable, "_holders", lambda self, groups: holders_of.extend(groups) or real_holders(
        self, groups))
    for groups in (50, 2000):
        built.clear(), holders_of.clear()
        frame = frames(groups, per_group=2)
        assert len(frame.rows["leaks"]) > groups
        render(frame, ViewState(pane="leaks"), 200, 30)
        assert 0 < len(built) <= 30 and sorted(holders_of) == sorted(built), groups


@pytest.mark.parametrize("needle,key", [("cam", "bytes"), ("", "stack"), ("", "creator"), ("", "holders"),
                                        ("map", "stack"), ("(cam) (", "age")])
def test_a_filter_or_a_text_sort_builds_rows_only_for_the_groups_shown(monkeypatch, needle, key):
    """A typed filter matches the columns' texts and a text sort ranks one column's texts, without a Row (creator,
    holders, stack, search text) for every group: the Rows built are the screen's, as without them."""
    built = []
    real_row = LeakTable._row
    monkeypatch.setattr(LeakTable, "_row", lambda self, group, holders: built.append(group) or real_row(
        self, group, holders))
    frame = frames(2000, per_group=2)
    view = ViewState(pane="leaks", filter=needle)
    view.sort["leaks"] = key
    shown = visible_rows(frame, view)
    assert len(shown) > 30
    render(frame, view, 200, 30)
    assert 0 < len(built) <= 30
    assert [row.key for row in shown] == [row.key for row in every_row_sorted(frame, view)]


@pytest.mark.parametrize("needle,key", [("cam", "bytes"), ("", "holders"), ("", "stack"), ("", "creator")])
def test_a_filter_or_a_text_sort_over_no_group_yet_shows_nothing(needle, key):
    """The pane's first refresh, or every buffer younger than --min-age: no group, while processes hold buffers.
    A filter typed or a text sort then shows an empty table (it raised IndexError in the holders' pass)."""
    frame = frames(40, per_group=3, min_age=3600.0)
    view = ViewState(pane="leaks", filter=needle)
    view.sort["leaks"] = key
    assert len(visible_rows(frame, view)) == 0
    render(frame, view, 200, 30)


@pytest.mark.parametrize("texts", [
    ["buf-1 a", "x", "BUF-10", "", "zzbuf-1", "buf-"],
    ["caf\u00e9 buf-1", "\u0130buf-1", "buf-1", "nothing"],  # not ASCII: a lowered text may be longer
])
@pytest.mark.parametrize("needle", ["buf-1", "buf", "1", "z", "\u00e9", "absent"])
def test_one_search_over_joined_texts_finds_what_a_test_per_text_finds(texts, needle):
    from dmabuf_top.live.leak_rows import _containing

    assert _containing(texts, needle).tolist() == [at for at, text in enumerate(texts) if needle in text.lower()]
