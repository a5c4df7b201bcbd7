"""The rw_file path (an exporter's own file I/O, DMA_BUF_IOCTL_RW_FILE on patched kernels) in the live view:
traced where its hook is live, n/t where the hook was refused, "absent" where the kernel has no such path;
never 0 without a live hook."""
import json

import jsonschema

from live_fixtures import LIVE_HOOKS, MiB, inventory, taskstats
from dmabuf_top.live.jsonout import JSON_SCHEMA, render_json
from dmabuf_top.live.model import LiveModel
from dmabuf_top.live.view import ViewState
from dmabuf_top.sampler import Sample
from dmabuf_top.live.screen import line_text, render
from dmabuf_top.probes.iopaths import Counters, Target
from dmabuf_top.probes.hooks import HookState, State
from dmabuf_top.trace_model import TraceSnapshot

UNPATCHED = HookState("rw_file_enter", "rw_file", "dma_buf_rw_file", State.NOT_NEEDED, None,
                      "this kernel has no such path (unpatched)")
REFUSED = HookState("rw_file_enter", "rw_file", "dma_buf_rw_file", State.MISSING, None, "fentry refused (EPERM)")
LIVE = HookState("rw_file_enter", "rw_file", "dma_buf_rw_file", State.LIVE, "fentry", "present")


def frames(hook, moved=0):
    """Two samples 2 s apart; the loader (pid 10) moved `moved` bytes into buffer 101 through rw_file."""
    model = LiveModel(1.0)
    out = []
    for t, done in ((1.0, 0), (3.0, moved)):
        by_target = {Target(101, 0, "rw_file", "dmabuf", False): Counters(calls=1, bytes=done)} if moved else {}
        by_task = {(10, "rw_file"): Counters(calls=2 if done else 1, bytes=done)} if moved else {}
        trace = TraceSnapshot(by_target, by_task, {}, {}, {}, {}, 0, LIVE_HOOKS + [hook])
        out.append(model.update(Sample(t, 1.8e9 + t, inventory(), trace, taskstats(0), True)))
    return out


def rw_file_row(frame):
    return next(row for row in frame.rows["paths"] if row.key == "rw_file")


def screen_line(frame):
    lines = [line_text(line) for line in render(frame, ViewState(pane="paths"), 160, 30)]
    return next(line for line in lines if line.split()[:1] == ["rw_file"])


def json_path(frame):
    obj = json.loads(render_json(frame))
    jsonschema.validate(obj, JSON_SCHEMA)
    return obj, next(p for p in obj["paths"] if p["path"] == "rw_file")


def test_unpatched_kernel_says_absent_not_zero_and_not_missing():
    _, second = frames(UNPATCHED)
    row = rw_file_row(second)
    assert row.values["status"] == "absent: dma_buf_rw_file: this kernel has no such path (unpatched)"
    assert all(row.values[key] is None for key in ("calls", "bytes", "copy", "pin", "pc_added", "latency"))
    cells = screen_line(second).split()
    assert cells[1:7] == ["n/t"] * 6 and "absent:" in cells
    obj, path = json_path(second)
    assert path["bytes"] is None and path["calls"] is None and path["status"].startswith("absent")
    assert "rw_file" in obj["hooks"]["absent"] and "rw_file" not in obj["hooks"]["missing"]
    assert "rw_file" not in second.missing  # not a warning in the header of every unpatched machine


def test_refused_hook_is_not_traced_with_its_reason():
    _, second = frames(REFUSED)
    row = rw_file_row(second)
    assert row.values["status"] == "n/t: dma_buf_rw_file: fentry refused (EPERM)"
    assert screen_line(second).split()[1:7] == ["n/t"] * 6
    obj, path = json_path(second)
    assert path["bytes"] is None and obj["hooks"]["missing"]["rw_file"].endswith("EPERM)")


def test_patched_kernel_traces_rw_file_per_path_and_into_the_buffers_xfer_column():
    first, second = frames(LIVE, moved=32 * MiB)
    assert rw_file_row(first).values["bytes"] is None  # first sample: no rate yet
    row = rw_file_row(second)
    assert row.values["status"] == "traced (no cpu_copy, gup)"
    assert row.values["bytes"] == 16 * MiB and row.values["calls"] == 0.5  # over the measured 2 s
    weights = next(r for r in second.rows["buffers"] if r.key == 101)
    assert weights.values["xfer"] == 16 * MiB and weights.values["read"] == 0
    assert weights.extra["paths"]["rw_file"]["bytes"] == 16 * MiB
    loader = next(r for r in second.rows["processes"] if r.key == 10)
    assert loader.values["xfer"] == 16 * MiB
    _, path = json_path(second)
    assert path["bytes"] == 16 * MiB
    assert "rw_file" in second.live_concerns and not second.absent.get("rw_file")


def test_no_hook_status_at_all_is_absent_not_zero():
    model = LiveModel(1.0)
    for t in (1.0, 2.0):
        frame = model.update(Sample(t, t, inventory(), TraceSnapshot({}, {}, {}, {}, {}, {}, 0, list(LIVE_HOOKS)),
                                    {}, True))
    assert rw_file_row(frame).values["status"] == "absent: no hook for this path"
    assert rw_file_row(frame).values["bytes"] is None
