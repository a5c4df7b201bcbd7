"""io_uring and AIO requests (iopaths.bpf.c, "io_uring and AIO requests"): their path ids decode, their hooks
are planned with fallbacks and are 'not needed' on a kernel built without them (never 0, never 'missing'
there), and the live view shows their bytes in the ASYNC column or n/t when their hooks are missing."""
import dataclasses
import json
import os

import jsonschema
from live_fixtures import LIVE_HOOKS, MiB, inventory, taskstats

from dmabuf_top.features import ABSENT, Feature, FeatureReport
from dmabuf_top.live.jsonout import JSON_SCHEMA, render_json
from dmabuf_top.live.model import LiveModel
from dmabuf_top.probes import hooks, iopaths
from dmabuf_top.probes import tracer as tracing
from dmabuf_top.probes.hooks import HookState, State
from dmabuf_top.probes.iopaths import Counters, Target
from dmabuf_top.render_trace import render_text
from dmabuf_top.sampler import Sample
from dmabuf_top.trace_model import NOT_TRACED, TraceSnapshot


def test_path_ids_match_enum_iopath():
    header = open(os.path.join(os.path.dirname(iopaths.__file__), "iopaths.h")).read()
    assert "IOPATH_IO_URING = 7," in header and "IOPATH_AIO = 8," in header
    assert (iopaths.PATHS[7], iopaths.PATHS[8]) == ("io_uring", "aio")


def test_request_keys_and_records_decode_to_the_async_paths():
    key = iopaths.IoTargetKey(inode=42, dev=(259 << 20) | 1, path=7, kind=2, direct=1)
    assert iopaths.decode_target(bytes(key)) == Target(42, os.makedev(259, 1), "io_uring", "shmem", True)
    task = iopaths.IoTaskKey(tgid=77, path=8, src_kind=3, dst_kind=1, error=0, src_magic=0xEF53, dst_magic=0)
    tgid, path, outcome = iopaths.decode_task(bytes(task))
    assert (tgid, path, outcome.src_kind, outcome.dst_kind, outcome.src_fs) == (77, "aio", "file", "dmabuf", "ext4")
    record = iopaths.IoRecordC(type=1, tgid=77, tid=78, path=7, kind=1, ret=1 << 20, requested=1 << 20,
                               inode=9, comm=b"iou-sqp-77")
    decoded = iopaths.decode_record(bytes(record))
    assert (decoded.path, decoded.kind, decoded.ret, decoded.comm) == ("io_uring", "dmabuf", 1 << 20, "iou-sqp-77")


def _report(**features):
    return FeatureReport(kernel={}, features={name.replace("__", "/"): f for name, f in features.items()})


def _points():
    return {point.concern: point for point in hooks.HOOK_POINTS}


def test_io_uring_uses_tp_btf_with_raw_tp_as_fallback_and_aio_fentry():
    specs = {program.name: (point, program) for point, program in hooks.programs()}
    assert specs["uring_submit_btf"][1].attach == hooks.TP_BTF
    assert specs["uring_submit_raw"][1].fallback_for == "uring_submit_btf"
    assert specs["uring_complete_raw"][1].fallback_for == "uring_complete_btf"
    assert {specs[name][1].target for name in ("aio_read_enter", "aio_write_exit", "aio_complete")} == {
        "aio_read", "aio_write", "aio_complete_rw"}
    assert specs["aio_complete"][0].concern == "aio" and specs["uring_complete_btf"][0].concern == "io_uring"


def test_a_kernel_without_io_uring_or_aio_has_no_such_path(tmp_path):
    points = _points()
    absent = _report(fn__aio_read=Feature(False, None, ABSENT), fn__aio_write=Feature(False, None, ABSENT),
                     fn__aio_complete_rw=Feature(False, None, ABSENT))
    (tmp_path / "events").mkdir()  # a tracefs without io_uring's events
    assert tracing._path_not_built(points["io_uring"], absent, tmp_path)
    assert tracing._path_not_built(points["aio"], absent, tmp_path)
    (tmp_path / "events" / "io_uring" / "io_uring_submit_req").mkdir(parents=True)
    assert not tracing._path_not_built(points["io_uring"], absent, tmp_path)
    assert not tracing._path_not_built(points["io_uring"], absent, None)  # no tracefs: proves nothing
    refused = _report(fn__aio_read=Feature(False, None, "fentry refused (EPERM)"),
                      fn__aio_write=Feature(False, None, ABSENT), fn__aio_complete_rw=Feature(False, None, ABSENT))
    assert not tracing._path_not_built(points["aio"], refused, tmp_path)


def test_aio_without_fentry_falls_back_to_its_syscalls_and_without_tp_btf_either_is_missing_not_zero():
    point = _points()["aio"]
    by_name = {program.name: program for program in point.programs}
    report = _report(fentry=Feature(False, None, "EPERM"), tp_btf=Feature(True, "tp_btf", "ok"),
                     fn__aio_read=Feature(False, None, "fentry refused (EPERM), kprobe refused (ENOENT)"))
    plans = {name: tracing._plan(program, report, None) for name, program in by_name.items()}
    states = {name: tracing._planned_state(point, program, plans[name], plans, report, None, False, None)
              for name, program in by_name.items()}
    assert states["aio_submit_sys"].live and states["aio_events_sys"].live
    served = tracing._served_by_fallbacks(states, [(point, program) for program in point.programs])
    assert not hooks.missing_concerns(served.values())
    assert all(served[name].state is State.NOT_NEEDED for name in by_name if not name.endswith("_sys"))

    report.features["tp_btf"] = Feature(False, None, "EINVAL")
    program = by_name["aio_read_enter"]
    plan = tracing._plan(program, report, None)
    state = tracing._planned_state(point, program, plan, {program.name: plan}, report, None, False, None)
    assert state.state is State.MISSING and "EPERM" in state.why
    snap = TraceSnapshot({}, {(5, "read"): Counters(calls=1, bytes=10)}, {}, {}, {}, {}, 0, [state])
    assert snap.missing_concerns() == {"aio": "aio_read: fentry refused (EPERM), kprobe refused (ENOENT)"}
    assert "aio" in render_text(snap.per_path(), snap.missing_concerns(), 0)


URING = HookState("uring_submit_btf", "io_uring", "io_uring_submit_req", State.LIVE, "tp_btf", "ok")
AIO_REFUSED = HookState("aio_read_enter", "aio", "aio_read", State.MISSING, None, "fentry refused (EPERM)")


def _frames(moved, hooks):
    """Two samples 2 s apart: pid 10 moved `moved` bytes by io_uring into buffer 101 (a dma-buf)."""
    model = LiveModel(1.0)
    out = []
    for t, done in ((1.0, 0), (3.0, moved)):
        by_target = {Target(101, 0, "io_uring", "dmabuf", True): Counters(calls=1, bytes=done)}
        by_task = {(10, "io_uring"): Counters(calls=1, bytes=done)}
        trace = TraceSnapshot(by_target, by_task, {}, {}, {}, {}, 0, LIVE_HOOKS + hooks)
        out.append(model.update(Sample(t, 1.8e9 + t, inventory(), trace, taskstats(0), True)))
    return out


def test_live_view_shows_io_uring_bytes_in_the_async_column_and_aio_as_not_traced():
    _, second = _frames(32 * MiB, [URING, AIO_REFUSED])
    buffer = next(row for row in second.rows["buffers"] if row.key == 101)
    assert buffer.values["async"] == 16 * MiB and buffer.values["read"] == 0
    process = next(row for row in second.rows["processes"] if row.key == 10)
    assert process.values["async"] == 16 * MiB
    paths = {row.key: row for row in second.rows["paths"]}
    assert paths["io_uring"].values["bytes"] == 16 * MiB and paths["io_uring"].values["status"].startswith("traced")
    assert paths["aio"].values["status"] == f"{NOT_TRACED}: aio_read: fentry refused (EPERM)"
    assert paths["aio"].values["bytes"] is None
    assert "async" not in second.not_traced("buffers")  # io_uring is live: only both missing is n/t
    obj = json.loads(render_json(second))
    jsonschema.validate(obj, JSON_SCHEMA)
    assert next(b for b in obj["buffers"] if b["inode"] == 101)["async"] == 16 * MiB


def test_live_async_column_is_not_traced_when_both_paths_are_missing():
    uring_refused = HookState("uring_submit_btf", "io_uring", "io_uring_submit_req", State.MISSING, None, "EINVAL")
    _, second = _frames(0, [uring_refused, AIO_REFUSED])
    assert "async" in second.not_traced("buffers") and "async" in second.not_traced("processes")


def test_a_refused_program_whose_fallback_is_live_is_not_needed_and_its_concern_not_missing():
    catalogue = [(point, program) for point, program in hooks.programs() if point.concern == "io_uring"]
    statuses = {
        "uring_submit_btf": HookState("uring_submit_btf", "io_uring", "io_uring_submit_req", State.MISSING, None,
                                      "tp_btf not available (EINVAL)"),
        "uring_complete_btf": HookState("uring_complete_btf", "io_uring", "io_uring_complete", State.MISSING, None,
                                        "tp_btf not available (EINVAL)"),
        "uring_submit_raw": HookState("uring_submit_raw", "io_uring", "io_uring_submit_req", State.LIVE, "raw_tp",
                                      "ok"),
        "uring_complete_raw": HookState("uring_complete_raw", "io_uring", "io_uring_complete", State.MISSING, None,
                                        "raw_tp not available"),
    }
    served = tracing._served_by_fallbacks(statuses, catalogue)
    assert served["uring_submit_btf"].state is State.NOT_NEEDED
    assert served["uring_submit_btf"].why == "tp_btf not available (EINVAL); uring_submit_raw is used"
    assert served["uring_complete_btf"].missing  # its fallback is not live: the completions are not traced
    assert hooks.missing_concerns(served.values()) == {"io_uring": "io_uring_complete: tp_btf not available (EINVAL)"}


def test_the_aio_syscall_fallback_is_done_in_the_syscall_programs_which_load_for_it_beside_the_vfs_path():
    """aio_submit_sys and aio_events_sys have no BPF program of their own (no second program on every syscall):
    they are live in the syscall programs; where the VFS path is live and only AIO's fentry is refused, the
    syscall programs are loaded for AIO alone."""
    catalogue = hooks.programs()
    by_name = {program.name: program for _, program in catalogue}
    assert by_name["aio_submit_sys"].within == ("syscall_enter_btf", "syscall_enter_raw")
    assert by_name["aio_events_sys"].within == ("syscall_exit_btf", "syscall_exit_raw")
    assert not tracing._own_program(by_name["aio_submit_sys"]) and tracing._own_program(by_name["syscall_enter_btf"])
    plans = {program.name: (True, "tp_btf", "ok") for _, program in catalogue}
    statuses = {name: HookState(name, "x", "t", State.NOT_NEEDED, None, "the VFS path is used")
                for name in by_name}
    statuses["aio_submit_sys"] = HookState("aio_submit_sys", "aio", "sys_enter", State.LIVE, "tp_btf", "ok")
    tracing._served_within(statuses, catalogue, plans)
    assert statuses["syscall_enter_btf"].live and "for aio_submit_sys" in statuses["syscall_enter_btf"].why
    assert statuses["aio_submit_sys"].live and "done in syscall_enter_btf" in statuses["aio_submit_sys"].why
    assert not statuses["syscall_exit_btf"].live  # aio_events_sys is not live here: nothing needs it
    refused = dict(statuses, syscall_exit_btf=dataclasses.replace(statuses["syscall_exit_btf"], state=State.MISSING),
                   syscall_exit_raw=dataclasses.replace(statuses["syscall_exit_raw"], state=State.MISSING),
                   aio_events_sys=HookState("aio_events_sys", "aio", "sys_exit", State.LIVE, "tp_btf", "ok"))
    tracing._served_within(refused, catalogue, plans)
    assert refused["aio_events_sys"].missing and "not live here" in refused["aio_events_sys"].why
