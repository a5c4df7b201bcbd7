"""The live collector on this kernel keeps io_by_target from filling under churn: counters of memfds gone
are forgotten (the recorder's rule), so a map smaller than the number of targets never refuses a key; the
same churn read without forgetting fills it, and the frame then says how many keys were refused."""
import os
import queue

import pytest

from dmabuf_top.inventory.collect import collect
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.view import ViewState
from dmabuf_top.probes.tracer import Tracer
from dmabuf_top.sampler import Collector, Sample, Sources
from dmabuf_top.live.screen import render_table
from test_tracer_maps_host import MemfdTargets

pytestmark = pytest.mark.root

ROOM = 32  # io_by_target entries
ROUNDS, PER_ROUND = 8, 12  # 96 memfds, each a new shmem target: three times the room


def churn(tmp_path, round_done):
    """ROUNDS times: PER_ROUND new memfds, a 4 KiB read into each, all closed; then round_done()."""
    inodes = []
    for _ in range(ROUNDS):
        targets = MemfdTargets(tmp_path, PER_ROUND)
        try:
            for index in range(PER_ROUND):
                targets.read_into(index)
            inodes += [os.fstat(fd).st_ino for fd in targets.memfds]
        finally:
            targets.close()
        round_done()
    return inodes


def test_the_collector_forgets_memfds_gone_and_its_small_map_refuses_nothing(tmp_path):
    frames, errors = queue.Queue(), queue.Queue()
    options = dict(ignore_self=False, max_entries={"io_by_target": ROOM})
    with Sources(pid=os.getpid(), taskstats=False, tracer_options=options) as sources:
        assert sources.tracer is not None
        seen = {}  # shmem inode -> the most bytes any frame's snapshot showed for it
        real_snapshot = sources.tracer.snapshot

        def snapshot(minimal=False):
            snap = real_snapshot(minimal=minimal)
            for target, counters in snap.by_target.items():
                if target.kind == "shmem":
                    seen[target.inode] = max(seen.get(target.inode, 0), counters.bytes)
            return snap

        sources.tracer.snapshot = snapshot
        collector = Collector(sources, LiveModel(0.1), 0.1, frames.put, errors.put)
        collector.start()

        shown = []

        def two_frames():  # one that sees the round move, one that sees it idle and forgets it
            frames.queue.clear()
            for _ in range(2):
                assert errors.empty(), errors.get()
                shown.append(frames.get(timeout=30))

        try:
            inodes = churn(tmp_path, two_frames)
            two_frames()
        finally:
            collector.stop()
            collector.join(30)
        assert errors.empty(), errors.get()
        reader = sources._trace_reader
        left = [t for t in sources.tracer.snapshot(minimal=True).by_target if t.kind == "shmem"]
        refused = sources.tracer.map_full()["io_by_target"]
    assert len(set(inodes)) == ROUNDS * PER_ROUND > ROOM
    assert refused == 0  # never full: every memfd's key found room
    assert reader.forgotten >= ROUNDS * PER_ROUND
    assert {inode: seen.get(inode) for inode in inodes} == dict.fromkeys(inodes, 4096)  # each read counted, once
    assert [t for t in left if t.inode in set(inodes)] == []  # and none of them left in the map
    assert all(frame.map_full["io_by_target"] == 0 for frame in shown)


def test_without_forgetting_the_same_churn_fills_the_map_and_the_frame_says_so(tmp_path):
    with Tracer(pid=os.getpid(), ignore_self=False, stacks=False, max_entries={"io_by_target": ROOM}) as tracer:
        churn(tmp_path, lambda: tracer.snapshot(minimal=True))  # read, never forgotten
        snap = tracer.snapshot(minimal=True)
    refused = snap.map_full["io_by_target"]
    assert len(snap.by_target) == ROOM and refused >= ROUNDS * PER_ROUND - ROOM
    frame = LiveModel(1.0).update(Sample(1.0, 1.0, collect(), snap))
    assert frame.map_full["io_by_target"] == refused
    assert f"map full: io_by_target refused {refused} new keys" in render_table(frame, "buffers", ViewState())
