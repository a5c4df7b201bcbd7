"""The Leaks pane as a LeakTable (live/leak_rows.py): the same rows as `dmabuf-top leaks` groups them, in the order
view.sort_rows gives, with text built only for the groups shown. No kernel."""
import os
from functools import partial

import pytest

from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.inventory.types import Buffer, FdRef, Holders, MapRef
from dmabuf_top.leaks import Creation, LeakTracker
from dmabuf_top.live.columns import COLUMNS, AgeAtLeast
from dmabuf_top.live.leak_rows import KeyTexts, LeakTable
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
    # three creators, some creations without a stack (grouped by exporter + size + name, with buffers of none)
    made = {b.inode: Creation(b.inode, (1 << 23) + b.inode % 3, "gone", S // 2, stack=STACK if b.inode % 2 else None,
                              kernel_frames=2)
            for b in buffers if b.inode % 7 == 0 or b.inode % 11 == 0}
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
        others = {leak.creator.pid for leak in group.buffers if leak.creator is not None} - {
            oldest.creator.pid if oldest.creator is not None else None}
        assert row.values["creator"] == creator_text(oldest) + (f" +{len(others)}" if others else "")
        assert row.extra["inodes"] == [leak.inode for leak in group.buffers]
        said = []
        for leak in group.buffers:
            labels = [f"{h.pid}({terminal_safe(h.comm, none='?')})" for h in leak.fd_holders]
            labels += [f"{h.pid}({terminal_safe(h.comm, none='?')}) map" for h in leak.map_holders]
            if leak.kernel_holds:
                labels.append("no process: " + ", ".join(leak.kernel_holds))
            said += [label for label in labels if label not in said]
        assert row.values["holders"] == " ".join(said)
    assert any(" +" in row.values["creator"] for row in rows.values())


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


CAM, GPU, NEW, MAPPER, CREATOR, OTHER = 10, 11, 12, 13, 20, 21
HOSTILE = b"\x1b]0;evil\x07\r\nx\x9b2J"
# the columns' texts and where one cell's text meets the next (holders, stack, creator), and the orphans' texts
KEPT_NEEDLES = ["cam", "gpu", "new", "map", "evil", "\\x1b", "no process", "vgem", "kernel reference", "exited",
                "+1", "before start", "not known", "(cam) (", "(gpu) 10(", "start 10("]


def refresh(step):
    """The population at refresh `step`, each step changing what some groups' creator or holder texts are made of
    while their group keys stay: ([Buffer], Holders, {inode: Creation}, the pids alive).
      0, 1  thirty groups of two buffers (g0..g29) by fd, some by mapping too, one buffer mapped by MAPPER only;
            an orphan attached to vgem, one held by nobody; a group made by one allocation stack (300: CREATOR,
            301: OTHER) and one of 310; from 1, one more buffer that has no creation (its creator not known)
      2     g1's holders in the other order, g2's first buffer held by a new process, g3's mapped too, g4's oldest
            freed, g6's last holder gone (its text a prefix of the last one), g5 one buffer more (made since the
            view started: its stack text changes); the orphan held by nobody held by CAM; the stack group's oldest
            freed (OTHER its creator now, and its stack splits elsewhere)
      3     GPU's and MAPPER's comms hostile (every group they hold); CREATOR exited
      4     their comms back; vgem's orphan attached to a second (hostile) device too"""
    buffers = [Buffer(inode=100 + i, size=4096, exporter="system", name=b"g%d" % (i // 2), file_refs=1,
                      attachment_count=0) for i in range(60) if not (step >= 2 and i == 8)]
    devices = ("vgem", "ev\x1bil") if step >= 4 else ("vgem",)
    buffers += [Buffer(inode=7, size=8192, exporter="system", name=b"kept", file_refs=0, attachment_count=len(devices),
                       attached_devices=devices),
                Buffer(inode=8, size=8192, exporter="system", name=b"kept", file_refs=0, attachment_count=0)]
    buffers.append(Buffer(inode=500, size=4096, exporter="system", name=b"mapped", file_refs=0, attachment_count=0))
    if step >= 2:
        buffers.append(Buffer(inode=501, size=4096, exporter="system", name=b"g5", file_refs=1, attachment_count=0))
    if step >= 1:
        buffers.append(Buffer(inode=400, size=4096, exporter="system", name=b"late", file_refs=1, attachment_count=0))
    stacked = [inode for inode in (300, 301, 310) if not (step >= 2 and inode == 300)]
    buffers += [Buffer(inode=inode, size=4096, exporter="system", name=None, file_refs=1, attachment_count=0)
                for inode in stacked]
    fds = [FdRef(CAM if i % 2 == 0 else GPU, 3, 100 + i) for i in range(60)]
    if step >= 2:
        fds[2], fds[3] = FdRef(GPU, 3, 102), FdRef(CAM, 3, 103)  # g1: the other order
        fds[4] = FdRef(NEW, 3, 104)
        fds[13] = FdRef(CAM, 3, 113)
    fds += [FdRef(CREATOR, 3, inode) for inode in stacked] + [FdRef(NEW, 4, 400)] * (step >= 1)
    fds += [FdRef(CAM, 4, 8), FdRef(CAM, 4, 501)] * (step >= 2)
    maps = [MapRef(GPU, 100 + i, 0, 4096) for i in range(0, 60, 5)] + [MapRef(MAPPER, 500, 0, 4096)]
    maps += [MapRef(CAM, 106, 0, 4096)] * (step >= 2)
    comms = {CAM: b"cam", GPU: HOSTILE if step == 3 else b"gpu", NEW: b"new", CREATOR: b"creator",
             MAPPER: b"\x1b[31mmapper" if step == 3 else b"mapper"}
    made = {300: Creation(300, CREATOR, "\x1b[2Jcam", 1 * S, stack=STACK, kernel_frames=2),
            301: Creation(301, OTHER, "other", 2 * S, stack=STACK, kernel_frames=3),
            310: Creation(310, CREATOR, "\x1b[2Jcam", 1 * S, stack=STACK[1:], kernel_frames=1)}
    made = {inode: creation for inode, creation in made.items() if inode in stacked}
    alive = {CAM, GPU, NEW, OTHER} | ({CREATOR} if step < 3 else set())
    return buffers, Holders(fds, maps, comms), made, alive


@pytest.mark.parametrize("key", ["holders", "creator", "stack", "bytes"])
def test_kept_texts_never_go_stale(key):
    """The texts kept across refreshes (KeyTexts) say what each refresh's groups are made of: a group whose holders
    change (order, a new holder, a mapping, one gone, its oldest freed, a comm, a kernel-only buffer's devices),
    whose creator changes (its oldest freed, the creator exited) or whose stack text does (a buffer made since the
    view started, a stack split elsewhere) shows the new text, under a filter that stays typed and in the rows
    shown, the same as a table that keeps nothing; and every text stays terminal-safe."""
    tracker = LeakTracker()
    kept = {needle: KeyTexts() for needle in ["", *KEPT_NEEDLES]}  # a view each, its filter typed at every refresh
    for step in range(5):
        buffers, holders, made, living = refresh(step)
        inventory = build_inventory(buffers, holders, "iterator", "iterator")
        now = (10 + step) * S
        tracker.observe(inventory, now, made)
        columns = tracker.columns(inventory, now, 0.0, made)
        comms = {process.pid: process.comm for process in inventory.processes}
        table = partial(LeakTable, columns, inventory.arrays, comms, alive=living.__contains__)
        expected = {row.key: row.values for row in table()}
        for text in (value for values in expected.values() for value in values.values() if isinstance(value, str)):
            assert text.isprintable(), (step, text)
        for needle in KEPT_NEEDLES:  # a filter typed: every group's texts, then the Rows shown
            shown = table(key_texts=kept[needle]).visible(key, False, needle)
            assert [row.key for row in shown] == [row.key for row in table().visible(key, False, needle)], (
                step, needle)
            assert {row.key: row.values for row in shown} == {row.key: expected[row.key] for row in shown}, (
                step, needle)
        shown = table(key_texts=kept[""]).visible(key)  # no filter: the Rows shown only (all of them here)
        assert {row.key: row.values for row in shown} == expected, step
