"""The live view's Leaks pane (key 6) and the created bytes per cgroup, from samples carrying creations: the rules
are leaks.LeakTracker's (the same as `dmabuf-top leaks`), said one group a line."""
import os

import jsonschema
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.inventory.types import Buffer, FdRef, Holders, MapRef
from dmabuf_top.leaks import Creation
from dmabuf_top.live.app import footer_text, handle_key
from dmabuf_top.live.columns import AgeAtLeast, column, format_cell
from dmabuf_top.live.jsonout import JSON_SCHEMA, to_dict
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.screen import render, render_table
from dmabuf_top.live.view import ViewState
from dmabuf_top.prometheus import DmabufCollector
from dmabuf_top.sampler import Sample

MiB = 1 << 20
S = 1_000_000_000
GONE_PID = (1 << 22) + 7  # above the largest pid_max: never a live process
KERNEL = ("dma_buf_export", "system_heap_allocate", "dma_heap_ioctl")
USER = ("ioctl+0x1b (libc.so.6)", "heap_alloc+0x4c (leak_creator)", "make_child_leak+0x9 (leak_creator)")


def buffers(*extra):
    return [Buffer(inode=1, size=8 * MiB, exporter="system", name=b"old", file_refs=1, attachment_count=0),
            Buffer(inode=2, size=MiB, exporter="system", name=b"kept", file_refs=0, attachment_count=1,
                   attached_devices=("vgem",)),
            *extra]


def inventory(*extra, cgroups=None):
    holders = Holders(fds=[FdRef(10, 3, 1)] + [FdRef(10, 4, b.inode) for b in extra if b.inode == 3],
                      maps=[MapRef(11, b.inode, 0x1000, 0x2000) for b in extra if b.inode == 4],
                      comms={10: b"parent", 11: b"mapper"})
    made = build_inventory(buffers(*extra), holders, "iterator", "iterator")
    made.cgroups = cgroups
    return made


def sample(t, inv, creations=None):
    return Sample(monotonic=t, wall=1_800_000_000 + t, inventory=inv, creations=creations)


ORPHAN = Buffer(inode=3, size=2 * MiB, exporter="system", name=b"orphan", file_refs=1, attachment_count=0)
MAPPED = Buffer(inode=4, size=MiB, exporter="system", name=b"mapped", file_refs=0, attachment_count=0)
LATE = Buffer(inode=5, size=4096, exporter="system", name=b"late", file_refs=0, attachment_count=0)


def creations(t_ns):
    stack = KERNEL + USER
    return {3: Creation(3, GONE_PID, "leak_creator", created_ns=t_ns, cgroup=b"/lab/a", stack=stack,
                        kernel_frames=len(KERNEL)),
            4: Creation(4, os.getpid(), "leak_creator", created_ns=t_ns, cgroup=b"/lab/b", stack=stack,
                        kernel_frames=len(KERNEL))}


def frames(min_age=1.0):
    """Buffers 1 and 2 there at the first sample (before start); 3 and 4 created by the lifecycle probe's
    sight at t=101 with one allocation stack; 5 appeared without a creation (made before the probe loaded)."""
    model = LiveModel(1.0, min_age=min_age)
    first = model.update(sample(100.0, inventory(), creations=None))  # the probe still loading
    made = creations(101 * S)
    second = model.update(sample(104.0, inventory(ORPHAN, MAPPED, LATE), creations=made))
    return first, second


def rows_by_stack(frame):
    return {row.values["stack"]: row for row in frame.rows["leaks"]}


def test_groups_by_allocation_stack_with_user_frames_first_and_creators():
    _, second = frames()
    rows = rows_by_stack(second)
    stacked = rows[" < ".join(USER) + " | " + " < ".join(KERNEL)]
    assert stacked.values["buffers"] == 2 and stacked.values["bytes"] == 3 * MiB
    assert stacked.values["growth"] == 3 * MiB  # none at the first sample
    assert stacked.values["age"] == 3.0 and not isinstance(stacked.values["age"], AgeAtLeast)
    # the oldest first, ties by inode: 3's creator has exited; 4's creator (another pid) counts as +1
    assert stacked.values["creator"] == f"{GONE_PID}(leak_creator) exited +1"
    assert stacked.values["holders"] == "10(parent) 11(mapper) map"
    assert sorted(stacked.extra["inodes"]) == [3, 4]


def test_buffers_from_before_the_start_say_so_with_an_at_least_age_and_no_stack():
    _, second = frames()
    rows = rows_by_stack(second)
    old = rows["(existed before dmabuf-top started: no stack) system old"]
    assert old.values["creator"] == "before start" and isinstance(old.values["age"], AgeAtLeast)
    assert format_cell(column("leaks", "age"), old.values["age"]) == ">=4.0s"
    kept = rows["(existed before dmabuf-top started: no stack) system kept"]
    assert kept.values["holders"] == "no process: vgem"


def test_a_buffer_made_after_the_start_without_a_creation_is_not_called_old_and_the_young_are_left_out():
    _, everything = frames(min_age=0)
    late = rows_by_stack(everything)["(allocation stack not known) system late"]
    assert late.values["creator"] == "not known" and late.values["age"] == 0.0  # first seen at 104
    assert not isinstance(late.values["age"], AgeAtLeast)
    _, strict = frames(min_age=2.0)
    stacks = rows_by_stack(strict)
    assert not any("late" in stack for stack in stacks)  # seen 0 s ago: younger than --min-age
    assert any(stack.startswith(USER[0]) for stack in stacks)  # 3 s old by its creation time


def test_first_sample_without_the_probe_lists_everything_as_before_start():
    first, _ = frames(min_age=0)
    assert {row.values["creator"] for row in first.rows["leaks"]} == {"before start"}


def test_screen_key_6_and_batch_table_show_the_pane():
    _, second = frames()
    view = ViewState()
    assert handle_key(view, ord("6")) == "pane" and view.pane == "leaks"
    assert "1-6 pane" in footer_text(view)
    screen = "\n".join("".join(text for text, _ in line) for line in render(second, view, 200, 20))
    assert "6:Leaks" in screen and "ALLOCATION STACK" in screen
    assert f"{GONE_PID}(leak_creator) exited +1" in screen and "make_child_leak+0x9" in screen
    assert "before start" in screen and ">=4.0s" in screen
    table = render_table(second, "leaks", ViewState(pane="leaks"))
    assert "existed before dmabuf-top started: no stack" in table


def test_hostile_frames_and_names_are_escaped():
    model = LiveModel(1.0, min_age=0)
    evil = Buffer(inode=3, size=MiB, exporter="system", name=b"\x1b[2Jx", file_refs=1, attachment_count=0)
    model.update(sample(100.0, inventory()))
    made = {3: Creation(3, 1, "a", 100 * S, stack=("\x1b]0;owned\x07",), kernel_frames=0)}
    frame = model.update(sample(101.0, inventory(evil), made))
    screen = "\n".join("".join(t for t, _ in line) for line in render(frame, ViewState(pane="leaks"), 200, 20))
    assert "\x1b" not in screen and "\x07" not in screen


def test_json_keeps_its_schema_without_the_leaks_pane():
    _, second = frames()
    document = to_dict(second)
    jsonschema.validate(document, JSON_SCHEMA)
    assert "leaks" not in document


def test_created_bytes_per_cgroup_from_the_samples_creations():
    cgroups = {10: b"/lab/a", 11: b"/lab/b"}
    model = LiveModel(1.0)
    without = model.update(sample(100.0, inventory(ORPHAN, MAPPED, cgroups=cgroups), creations=None))
    assert {row.values["created"] for row in without.rows["cgroups"]} == {None}  # "not known", never 0
    frame = model.update(sample(101.0, inventory(ORPHAN, MAPPED, cgroups=cgroups), creations(100 * S)))
    created = {row.values["cgroup"]: row.values["created"] for row in frame.rows["cgroups"]}
    assert created["a"] == 2 * MiB and created["b"] == MiB
    by_path = {row["cgroup"]: row["created_bytes"] for row in to_dict(frame)["cgroups"] if row["kind"] == "cgroup"}
    assert by_path == {"/lab/a": 2 * MiB, "/lab/b": MiB}


def test_exporter_created_bytes_from_the_followed_creations():
    inv = inventory(ORPHAN, MAPPED, cgroups={10: b"/lab/a", 11: b"/lab/b"})

    def scrape(made):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DmabufCollector(lambda: inv, None, 20, 20, creations=lambda: made))
        return {(s.name, s.labels.get("cgroup")): s.value
                for family in text_string_to_metric_families(generate_latest(registry).decode())
                for s in family.samples}

    assert not any(name == "dmabuf_cgroup_created_bytes" for name, _ in scrape(None))
    samples = scrape(creations(0))
    assert samples[("dmabuf_cgroup_created_bytes", "/lab/a")] == 2 * MiB
    assert samples[("dmabuf_cgroup_created_bytes", "/lab/b")] == MiB
