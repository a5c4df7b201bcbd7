"""The lifecycle probe (probes/buffer_lifecycle.bpf.c) loads on this kernel beside iopaths and says which of
its hooks are live: the CI host has tp_btf but neither the dma_buf tracepoints (7.0+) nor fentry."""
import os

from dmabuf_top import features
from dmabuf_top.kernelfs import tracefs_root, tracepoint_exists
from dmabuf_top.probes.buffer_lifecycle import LEAKS_STACK_DEPTH
from dmabuf_top.probes.hooks import DMA_BUF_TRACEPOINTS, LIFECYCLE_OBJECT, State
from dmabuf_top.probes.tracer import Tracer

LIFECYCLE_PROGRAMS = {f"lifecycle_{name}" for name in DMA_BUF_TRACEPOINTS} | {
    "lifecycle_fexit_export", "lifecycle_fentry_release", "lifecycle_fexit_set_name", "lifecycle_fexit_get",
    "lifecycle_fentry_put", "lifecycle_udmabuf_backing_btf", "lifecycle_udmabuf_backing"}


def test_the_lifecycle_probe_loads_and_reports_every_hook():
    report = features.detect()
    tracefs = tracefs_root()
    with Tracer(pid=os.getpid(), record=True, ignore_self=False, follow_children=True, report=report) as tracer:
        hooks = {hook.program: hook for hook in tracer.hooks if hook.concern == "lifecycle"}
        assert set(hooks) == LIFECYCLE_PROGRAMS
        for name in DMA_BUF_TRACEPOINTS:
            hook = hooks[f"lifecycle_{name}"]
            present = tracepoint_exists(tracefs, f"dma_buf:{name}")
            assert hook.state is (State.LIVE if present else State.MISSING), hook
            assert present or "absent" in hook.why
        fentry = report.features["fn/dma_buf_export"]
        export_fallback = hooks["lifecycle_fexit_export"]
        if hooks["lifecycle_dma_buf_export"].live:
            assert export_fallback.state is State.NOT_NEEDED
        else:
            assert export_fallback.state is (State.LIVE if fentry.available and fentry.via == "fentry"
                                             else State.MISSING)
        for name in ("lifecycle_fentry_release", "lifecycle_fexit_set_name"):
            function = hooks[name].target
            feature = report.features[f"fn/{function}"]
            assert hooks[name].state is (State.LIVE if feature.available and feature.via == "fentry"
                                         else State.MISSING), hooks[name]
        # A udmabuf's memfd at export: the export tracepoint as tp_btf, else fexit; missing when neither attaches.
        backing, backing_fallback = hooks["lifecycle_udmabuf_backing_btf"], hooks["lifecycle_udmabuf_backing"]
        by_tp_btf = tracepoint_exists(tracefs, "dma_buf:dma_buf_export") and report.available("tp_btf")
        by_fexit = fentry.available and fentry.via == "fentry"
        assert (backing.state, backing_fallback.state) == (
            (State.LIVE, State.NOT_NEEDED) if by_tp_btf else (State.NOT_NEEDED, State.LIVE) if by_fexit
            else (State.MISSING, State.MISSING)), (backing, backing_fallback)
        if not tracepoint_exists(tracefs, "dma_buf:dma_buf_export"):
            assert backing.why == "tracepoint absent on this kernel", backing
        elif not report.available("tp_btf"):
            assert "tp_btf" in backing.why, backing
        # Its maps are there and read: counts in the snapshot, refusals and drops beside iopaths'.
        assert LIFECYCLE_OBJECT in tracer._objs
        snap = tracer.snapshot()
        assert isinstance(snap.lifecycle, dict)
        assert snap.map_full["lifecycle_counts"] == 0 and tracer.dropped() == 0
        assert tracer.alloc_stack_ips(-1) == [] and tracer.alloc_stack_ips(0) == []
        tracer.poll_records(timeout_ms=0)


def test_lifecycle_records_alone_for_leaks():
    """io_records=False (leaks): the lifecycle probe's ring only; the I/O programs keep counting, ring nothing."""
    with Tracer(record=True, io_records=False, ignore_self=False) as tracer:
        lifecycle_ring = tracer._objs[LIFECYCLE_OBJECT].map("records").max_entries
        assert tracer._objs["iopaths"].map("records").max_entries == os.sysconf("SC_PAGE_SIZE")
        assert 0 < tracer.ring_capacity <= lifecycle_ring // 16
        with open("/proc/self/stat", "rb") as stat:  # I/O while attached: no record comes out of the I/O ring
            stat.read()
        assert all(record.__class__.__name__ == "LifecycleRecord" for record in tracer.drain_records(1000))
        assert isinstance(tracer.snapshot().by_target, dict)


def _stack_map_bytes(tracer):
    lifecycle = tracer._objs[LIFECYCLE_OBJECT]
    return sum(lifecycle.map(name).max_entries * lifecycle.map(name).value_size
               for name in ("alloc_stacks", "alloc_user_stacks", "alloc_raw_user_stacks"))


def test_stack_maps_are_sized_to_their_reader():
    """record keeps 127 frames per stack (flame graphs): 9 MiB of stack maps; leaks and the live view group by
    the innermost LEAKS_STACK_DEPTH frames: 2.25 MiB; without stacks (the exporter), next to nothing."""
    MiB = 1 << 20
    with Tracer(record=True, stacks=True, ignore_self=False) as tracer:
        assert _stack_map_bytes(tracer) > 8.9 * MiB
    with Tracer(record=True, stacks=True, io_records=False, ignore_self=False) as tracer:
        assert tracer._objs[LIFECYCLE_OBJECT].map("alloc_stacks").value_size == LEAKS_STACK_DEPTH * 8
        assert _stack_map_bytes(tracer) == 2.25 * MiB
    with Tracer(record=True, stacks=False, io_records=False, ignore_self=False) as tracer:
        assert _stack_map_bytes(tracer) < 16 * 1024
