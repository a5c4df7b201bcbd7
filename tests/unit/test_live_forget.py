"""The live view and the exporter forget the counters of buffers gone (inventory.index, the recorder's
rule) and say when a map refused keys: header, JSON and Prometheus. No kernel: a tracer of plain dicts."""
import json

import jsonschema

from live_fixtures import LIVE_HOOKS, MiB, inventory
from dmabuf_top.inventory.index import BufferIndex
from dmabuf_top.live.jsonout import JSON_SCHEMA, render_json
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.view import ViewState
from dmabuf_top.live.screen import render_table
from dmabuf_top.inventory.types import Buffer
from dmabuf_top.probes.iopaths import Counters, Target
from dmabuf_top.sampler import Sample, TraceReader
from dmabuf_top.trace_model import MINIMAL_MAPS, TraceSnapshot

READ_101 = Target(101, 0, "read", "dmabuf", False)
GONE_77 = Target(77, 0, "read", "dmabuf", False)
MEMFD_555 = Target(555, 42, "write", "shmem", False)  # udmabuf 102's memfd in live_fixtures
PLAIN_MEMFD = Target(556, 42, "write", "shmem", False)  # behind no udmabuf
FILE = Target(9, 1, "read", "file", False)


class DictTracer:
    """Cumulative counters in a dict, as the kernel map holds them; forget deletes keys."""

    def __init__(self):
        self.by_target = {}
        self.map_full = {}
        self.forgot = []

    def add(self, target, nbytes):
        before = self.by_target.get(target, Counters())
        self.by_target[target] = before + Counters(calls=1, bytes=nbytes)

    def snapshot(self, minimal=False):
        assert minimal
        by_task = {(10, "read"): Counters(calls=1, bytes=1)}
        return TraceSnapshot(dict(self.by_target), by_task, {}, {}, {}, {}, 0, list(LIVE_HOOKS), dict(self.map_full))

    def forget(self, targets=()):
        self.forgot += list(targets)
        for target in targets:
            del self.by_target[target]
        return len(targets)


def test_gone_targets_are_idle_dmabufs_and_memfds_no_buffer_shows():
    index = BufferIndex.of_inventory(inventory())  # buffers 101, 102 (udmabuf on memfd 555/42), 103
    previous = {READ_101: Counters(bytes=1), GONE_77: Counters(bytes=2), MEMFD_555: Counters(bytes=3),
                PLAIN_MEMFD: Counters(bytes=4), FILE: Counters(bytes=5)}
    now = dict(previous)
    assert index.gone(now, previous) == [GONE_77, PLAIN_MEMFD]
    now[GONE_77] = Counters(bytes=9)  # moved during the interval: its delta is not taken yet
    assert index.gone(now, previous) == [PLAIN_MEMFD]
    assert index.gone(now, {}) == []  # first read: nothing has been idle for an interval


def test_a_forgotten_inode_that_comes_back_gives_no_negative_rate_nor_spike():
    tracer = DictTracer()
    reader = TraceReader(tracer)
    index = BufferIndex()
    model = LiveModel(1.0)
    extra = [Buffer(inode=77, size=MiB, exporter="system", name=b"short", file_refs=1, attachment_count=0)]

    def frame(t, buffers_extra):
        inv = inventory(buffers_extra)
        index.learn_inventory(inv)  # as the sampler does, one read per sample
        return model.update(Sample(monotonic=t, wall=t, inventory=inv, trace=reader.snapshot(index), index=index))

    tracer.add(GONE_77, 99 * MiB)
    frame(0.0, extra)
    tracer.add(GONE_77, MiB)  # buffer 77 moved 100 MiB in all, then is freed
    frame(1.0, ())  # gone, but it moved since the previous read: kept for its last delta
    assert tracer.forgot == []
    frame(2.0, ())  # gone and idle: forgotten
    assert tracer.forgot == [GONE_77] and GONE_77 not in tracer.by_target and reader.forgotten == 1
    tracer.add(GONE_77, MiB)  # a new buffer with the same inode: its key counts from zero
    third = frame(3.0, extra)
    tracer.add(GONE_77, 2 * MiB)
    fourth = frame(4.0, extra)
    rates = [row.values["read"] for f in (third, fourth) for row in f.rows["buffers"] if row.key == 77]
    assert rates == [None, 2 * MiB]  # new on screen: no rate yet; then its own 2 MiB/s, never -99 MiB/s
    system = [row.values["read"] for f in (third, fourth) for row in f.rows["exporters"] if row.key == "system"]
    assert all(rate is None or 0 <= rate <= 2 * MiB for rate in system) and system[-1] == 2 * MiB


def test_a_full_map_is_said_in_the_header_the_json_and_prometheus():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from dmabuf_top.prometheus import DmabufCollector

    tracer = DictTracer()
    tracer.map_full = {"io_by_target": 1234, "lifecycle_counts": 99}  # lifecycle: a map the view never reads
    reader = TraceReader(tracer)
    model = LiveModel(1.0)
    inv = inventory()
    index = BufferIndex.of_inventory(inv)
    model.update(Sample(0.0, 0.0, inv, reader.snapshot(index)))
    frame = model.update(Sample(1.0, 1.0, inv, reader.snapshot(index)))
    assert frame.map_full == {**dict.fromkeys(MINIMAL_MAPS, 0), "io_by_target": 1234}
    header = render_table(frame, "buffers", ViewState()).splitlines()[3]
    assert "dropped events: 0  map full: io_by_target refused 1234 new keys" in header
    assert "lifecycle" not in header and "io_by_task" not in header  # only maps that refused, and only read ones
    obj = json.loads(render_json(frame))
    jsonschema.validate(obj, JSON_SCHEMA)
    assert obj["map_full"]["io_by_target"] == 1234 and "lifecycle_counts" not in obj["map_full"]
    untraced = model.update(Sample(2.0, 2.0, inv, None))
    assert untraced.map_full is None and json.loads(render_json(untraced))["map_full"] is None
    assert "map full" not in render_table(untraced, "buffers", ViewState())
    for broken in ({**obj, "map_full": {"io_by_target": -1}}, {**obj, "map_full": 3}):
        try:
            jsonschema.validate(broken, JSON_SCHEMA)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {broken['map_full']}")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DmabufCollector(lambda: inv, tracer))
    refused = {sample.labels["map"]: sample.value
               for family in text_string_to_metric_families(generate_latest(registry).decode())
               for sample in family.samples if sample.name == "dmabuf_map_full_refused_keys_total"}
    assert refused == {**dict.fromkeys(MINIMAL_MAPS, 0), "io_by_target": 1234}
