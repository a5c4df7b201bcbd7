"""Leak hunting on inventories over time: ages, groups, growth, creators, holders; text and JSON. No kernel."""
import json

from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.inventory.types import Buffer, FdRef, Holders, MapRef
from dmabuf_top.leaks import EXITED, KERNEL_REFERENCE, NOT_KNOWN, RUNNING, Creation, HoldEvent, LeakTracker
from dmabuf_top.render_leaks import render_json, render_text

MiB = 1 << 20
S = 1_000_000_000
HOSTILE = b"\x1b[2Jleak\n\xff"


def buffer(inode, size=MiB, name=b"frame", devices=()):
    return Buffer(inode=inode, size=size, exporter="system", name=name, file_refs=1,
                  attachment_count=len(devices), attached_devices=tuple(devices))


def inventory(buffers, fds=(), maps=()):
    comms = {10: b"app", 20: b"\x1b]0;x\x07srv"}
    return build_inventory(buffers, Holders([FdRef(pid, 3, inode) for pid, inode in fds],
                                            [MapRef(pid, inode, 0, 4096) for pid, inode in maps], comms),
                           "iterator", "iterator")


def grow(tracker):
    """t=0: buffer 1 (there before the tool). t=1: 2 and 3 (same kind as 1), 4 kernel-only attached to a device.
    t=3: 5 kernel-only, nothing attached; 3 held by a mapping only; report at t=3."""
    tracker.observe(inventory([buffer(1)], fds=[(10, 1)]), 0)
    tracker.observe(inventory([buffer(1), buffer(2), buffer(3), buffer(4, 4 * MiB, HOSTILE, ["npu0"])],
                              fds=[(10, 1), (10, 2), (20, 3)]), 1 * S)
    last = inventory([buffer(1), buffer(2), buffer(3), buffer(4, 4 * MiB, HOSTILE, ["npu0"]), buffer(5, 2 * MiB)],
                     fds=[(10, 1), (10, 2), (20, 2)], maps=[(20, 3)])
    tracker.observe(last, 3 * S)
    return last


def test_groups_ages_growth_and_holders():
    tracker = LeakTracker()
    last = grow(tracker)
    report = tracker.report(last, 3 * S, min_age_s=1.5)
    assert (report.buffers, report.bytes, report.observations, report.elapsed_s) == (4, 7 * MiB, 3, 3.0)
    kernel, frames = report.groups[0], report.groups[1]
    assert [b.inode for b in kernel.buffers] == [4] and kernel.buffers[0].kernel_holds == ("npu0",)
    assert [b.inode for b in frames.buffers] == [1, 2, 3]  # oldest first; 5 is too young
    one, two, three = frames.buffers
    assert (one.preexisting, one.age_known, one.age_s, one.creator_state) == (True, False, 3.0, NOT_KNOWN)
    assert (two.preexisting, two.age_known, two.age_s) == (False, True, 2.0)
    assert [(h.pid, h.count) for h in two.fd_holders] == [(10, 1), (20, 1)]
    assert three.fd_holders == () and [(h.pid, h.comm, h.count) for h in three.map_holders] == [
        (20, b"\x1b]0;x\x07srv", 1)]
    assert frames.series == [(0.0, 1, MiB), (1.0, 3, 3 * MiB), (3.0, 3, 3 * MiB)] and frames.growth == (2, 2 * MiB)
    assert report.notes  # says creators are not known and why


def test_kernel_only_without_attachment_is_a_kernel_reference():
    tracker = LeakTracker()
    last = grow(tracker)
    report = tracker.report(last, 3 * S, min_age_s=0)
    young = next(b for g in report.groups for b in g.buffers if b.inode == 5)
    assert young.kernel_holds == (KERNEL_REFERENCE,) and young.age_s == 0.0


def test_creations_give_age_creator_and_stack_groups():
    tracker = LeakTracker()
    stack = ("dma_heap_ioctl", "libcam.so+0x1234")
    creations = {2: Creation(2, 77, "cam", created_ns=0, tid=78, cgroup=b"/cam.service", stack=stack),
                 3: Creation(3, 10, "app", created_ns=S // 2, stack=stack)}
    last = grow(tracker)
    report = tracker.report(last, 3 * S, 1.5, creations, alive=lambda pid: pid != 77)
    by_stack = next(g for g in report.groups if g.stack == stack)
    assert [(b.inode, b.age_s, b.creator_state) for b in by_stack.buffers] == [(2, 3.0, EXITED), (3, 2.5, RUNNING)]
    assert not report.notes


def test_a_reused_inode_is_a_new_buffer():
    tracker = LeakTracker()
    tracker.observe(inventory([buffer(1)]), 0)
    tracker.observe(inventory([]), S)
    again = inventory([buffer(1)])
    tracker.observe(again, 2 * S)
    leak = tracker.report(again, 2 * S, 0).groups[0].buffers[0]
    assert (leak.preexisting, leak.age_known, leak.age_s) == (False, True, 0.0)


def test_text_neutralises_hostile_names_and_says_what_it_does_not_know():
    tracker = LeakTracker()
    last = grow(tracker)
    text = render_text(tracker.report(last, 3 * S, 0))
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2Jleak\\n\\xff" in text and "npu0" in text and "kernel reference" in text
    assert "existed before dmabuf-top started: no stack" not in text  # group of 1, 2, 3: not all preexisting
    assert ">=3.0s" in text and "before start" in text


def test_json_is_exact():
    tracker = LeakTracker()
    last = grow(tracker)
    document = json.loads(render_json(tracker.report(last, 3 * S, 1.5)))
    assert document["schema"] == "dmabuf-top.leaks/1" and document["bytes"] == 7 * MiB
    kernel = document["groups"][0]
    assert bytes.fromhex(kernel["name_hex"]) == HOSTILE and kernel["buffers"][0]["kernel_holds"] == ["npu0"]
    frames = document["groups"][1]
    assert (frames["growth_buffers"], frames["growth_bytes"], frames["stack"]) == (2, 2 * MiB, None)
    first = frames["buffers"][0]
    assert (first["preexisting"], first["age_known"], first["creator"], first["creator_state"]) == (
        True, False, None, "not known")
    assert frames["buffers"][2]["map_holders"][0]["comm_hex"] == b"\x1b]0;x\x07srv".hex()


def test_a_kernel_only_buffer_shows_its_last_get_put_events_and_missing_hooks_say_so():
    tracker = LeakTracker()
    last = grow(tracker)
    events = {4: (HoldEvent("get", 30, "importer", 2 * S), HoldEvent("attach", 30, "importer", 2 * S + S // 2)),
              1: (HoldEvent("get", 10, "app", S),)}  # 1 is held by a process: its events are not what holds it
    report = tracker.report(last, 3 * S, 0, hold_events=events)
    leaks = {b.inode: b for g in report.groups for b in g.buffers}
    assert [e.event for e in leaks[4].last_events] == ["get", "attach"] and leaks[1].last_events == ()
    assert leaks[5].last_events == ()  # kernel-only, no event seen since the start: none, not "missing"
    text = render_text(report)
    assert "last get/put: get 30(importer) 1.0s ago, attach 30(importer) 0.5s ago" in text
    assert "last get/put: none since dmabuf-top started" in text
    document = json.loads(render_json(report))
    assert document["hold_events_known"]
    by_inode = {b["inode"]: b for g in document["groups"] for b in g["buffers"]}
    assert by_inode[4]["last_events"] == [{"event": "get", "pid": 30, "comm": "importer", "age_s": 1.0},
                                          {"event": "attach", "pid": 30, "comm": "importer", "age_s": 0.5}]
    assert by_inode[1]["last_events"] == []

    missing = tracker.report(last, 3 * S, 0, hold_events=None)  # no get/put hooks on this kernel
    assert "last get/put: missing" in render_text(missing)
    document = json.loads(render_json(missing))
    assert not document["hold_events_known"]
    assert {b["inode"]: b["last_events"] for g in document["groups"] for b in g["buffers"]}[4] is None


def test_columns_and_entries_group_alike():
    """The live view observes from the inventory's columns, `leaks` may from its entries: one rule, same groups."""
    made = inventory([buffer(1), buffer(2), buffer(3, 2 * MiB, None), buffer(4, 4 * MiB, HOSTILE, ["npu0"])],
                     fds=[(10, 1)])
    assert made.arrays is not None
    creations = {2: Creation(2, 7, "cam", 0, stack=("f", "g")), 3: Creation(3, 7, "cam", 0)}
    by_columns, by_entries = LeakTracker(), LeakTracker()
    by_columns.observe(made, S, creations)
    made.arrays = None
    by_entries.observe(made, S, creations)
    assert by_columns._history == by_entries._history and by_columns._preexisting == by_entries._preexisting
    assert ("stack", "f", "g") in by_columns._history[0][1]
