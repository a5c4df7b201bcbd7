"""Tracing decoders, the Tracer's plan, the snapshot model and its rendering, without a kernel."""
import ctypes

import pytest

from dmabuf_top import trace_model
from dmabuf_top.bpf import struct_size_in_object
from dmabuf_top.features import Feature, FeatureReport
from dmabuf_top.inventory.index import BufferIndex
from dmabuf_top.inventory.types import Buffer
from dmabuf_top.probes import buffer_lifecycle, hooks, iopaths, object_path
from dmabuf_top.probes import tracer as tracing
from dmabuf_top.probes.hooks import HookState, State
from dmabuf_top.probes.iopaths import Counters
from dmabuf_top.render_trace import render_text


@pytest.mark.parametrize("module,name", [(iopaths, name) for name in sorted(iopaths.MIRRORS)]
                         + [(buffer_lifecycle, name) for name in sorted(buffer_lifecycle.MIRRORS)])
def test_ctypes_mirrors_match_the_c_structs(module, name):
    probe = module.__name__.rpartition(".")[2]
    assert struct_size_in_object(object_path(probe), name) == ctypes.sizeof(module.MIRRORS[name])


def test_counters_round_trip_add_and_subtract():
    raw = iopaths.IoCountersC(calls=3, bytes=300, cpu_copied=200)
    raw.latency_hist[4] = 3
    c = Counters.from_raw(bytes(raw))
    assert (c.calls, c.bytes, c.cpu_copied, c.latency_hist[4]) == (3, 300, 200, 3)
    total = c + c
    assert (total.calls, total.latency_hist[4]) == (6, 6)
    assert total - c == c


def test_target_key_decodes_dev_to_user_space_encoding():
    key = iopaths.IoTargetKey(inode=42, dev=(259 << 20) | 1, path=1, kind=1, direct=1)
    target = iopaths.decode_target(bytes(key))
    import os
    assert target == iopaths.Target(42, os.makedev(259, 1), "read", "dmabuf", True)


def test_per_process_totals_and_outcomes_are_both_sums_over_the_task_keys():
    """io_by_task keys carry the outcome (both ends, filesystems, error): one process's calls with
    two outcomes are one per-process total; the same outcome in two processes is one outcome row."""
    def key(tgid, path, src, dst, error=0, src_magic=0xEF53, dst_magic=0x01021994):
        return bytes(iopaths.IoTaskKey(tgid=tgid, path=iopaths.PATH_IDS[path], src_kind=src, dst_kind=dst,
                                       error=error, src_magic=src_magic, dst_magic=dst_magic))

    entries = [
        (key(10, "copy_file_range", 3, 2), Counters(calls=2, bytes=2 << 20, requested=2 << 20, latency_ns=7)),
        (key(10, "copy_file_range", 3, 2, error=-18), Counters(calls=1, errors=1, requested=1 << 20)),
        (key(11, "copy_file_range", 3, 2), Counters(calls=1, bytes=4096, requested=4096)),
        (key(11, "other", 0, 0, src_magic=0, dst_magic=0), Counters(cpu_copied=4096)),
    ]
    by_task, outcomes = iopaths.tasks_and_outcomes(
        (*iopaths.decode_task(raw), counters) for raw, counters in entries)
    assert by_task[(10, "copy_file_range")] == Counters(calls=3, errors=1, bytes=2 << 20, requested=3 << 20,
                                                        latency_ns=7)
    assert by_task[(11, "copy_file_range")].calls == 1 and by_task[(11, "other")].cpu_copied == 4096
    fine = iopaths.Outcome("copy_file_range", "file", "shmem", 0, "ext4", "tmpfs")
    exdev = iopaths.Outcome("copy_file_range", "file", "shmem", -18, "ext4", "tmpfs")
    assert outcomes == {fine: {"calls": 3, "bytes": (2 << 20) + 4096, "requested": (2 << 20) + 4096},
                        exdev: {"calls": 1, "bytes": 0, "requested": 1 << 20}}  # work outside calls: no outcome


def test_short_values_are_an_error_not_garbage():
    with pytest.raises(Exception, match="rebuild"):
        Counters.from_raw(b"\0" * 8)


def test_records_decode_by_type():
    rec = iopaths.IoRecordC(type=1, tgid=7, tid=8, path=3, kind=2, ret=-18, comm=b"cp")
    decoded = iopaths.decode_record(bytes(rec))
    assert (decoded.path, decoded.kind, decoded.ret, decoded.comm) == ("copy_file_range", "shmem", -18, "cp")
    with pytest.raises(Exception, match="unknown type"):
        iopaths.decode_record(b"\x09\0\0\0" + bytes(60))


def test_lifecycle_records_decode_with_creator_cgroup_stacks_and_names():
    life = buffer_lifecycle.LifecycleRecordC(event=1, tgid=7, tid=8, inode=9, size=4096, fd=-1, kernel_stack=3,
                                             user_stack=-14, cgroup_id=77, comm=b"load", exporter=b"system",
                                             name=b"\x1b[31mred")
    decoded = buffer_lifecycle.decode_record(bytes(life))
    assert (decoded.event, decoded.tgid, decoded.tid, decoded.inode, decoded.size, decoded.cgroup_id) == \
        ("export", 7, 8, 9, 4096, 77)
    assert (decoded.comm, decoded.exporter, decoded.name) == ("load", "system", b"\x1b[31mred")  # raw: hostile
    assert (decoded.kernel_stack, decoded.user_stack) == (3, -14)
    unnamed = buffer_lifecycle.decode_record(bytes(buffer_lifecycle.LifecycleRecordC(event=10, inode=9)))
    assert (unnamed.event, unnamed.name) == ("name", None)
    with pytest.raises(Exception, match="rebuild"):
        buffer_lifecycle.decode_record(bytes(life)[:40])


def _snapshot(by_target, hooks=()):
    return trace_model.TraceSnapshot(by_target, {}, {}, {}, {}, {}, 0, list(hooks))


def test_per_buffer_maps_dmabufs_directly_and_udmabufs_through_their_memfd():
    heap = Buffer(inode=10, size=4096, exporter="system", name=None, file_refs=1, attachment_count=0)
    udma = Buffer(inode=20, size=4096, exporter="udmabuf", name=None, file_refs=1, attachment_count=0,
                  backing_inode=77, backing_dev=5)
    one = Counters(calls=1, bytes=4096)
    snap = _snapshot({
        iopaths.Target(10, 0, "read", "dmabuf", False): one,
        iopaths.Target(77, 5, "read", "shmem", True): one,
        iopaths.Target(77, 5, "write", "shmem", False): one,
        iopaths.Target(77, 6, "read", "shmem", False): one,  # same inode, other device: not this memfd
        iopaths.Target(0, 0, "read", "none", False): one,
    })
    index = BufferIndex()
    index.learn([heap, udma])
    out = index.per_buffer(snap.by_target)
    assert set(out) == {10, 20}
    assert out[20]["read"].calls == 1 and out[20]["write"].calls == 1
    assert out[10]["read"].bytes == 4096


def _report(**features):
    return FeatureReport(kernel={}, features={name.replace("__", "/"): f for name, f in features.items()})


def test_plan_follows_the_feature_report():
    spec = hooks.Program("copy_filemap_read", "fentry", "filemap_read")
    ok = _report(fentry=Feature(True, "fentry"), fn__filemap_read=Feature(True, "fentry", "ok"))
    assert tracing._plan(spec, ok, None)[:2] == (True, "fentry")
    refused = _report(fentry=Feature(False, None, "EPERM"),
                      fn__filemap_read=Feature(False, None, "fentry refused (EPERM), kprobe refused (ENOENT)"))
    load, via, reason = tracing._plan(spec, refused, None)
    assert (load, via) == (False, None) and "EPERM" in reason
    kprobe_only = _report(fentry=Feature(False), fn__filemap_read=Feature(True, "kprobe", "kprobe ok"))
    assert "no kprobe variant" in tracing._plan(spec, kprobe_only, None)[2]
    tp = hooks.Program("lifecycle_dma_buf_export", "tracepoint", "dma_buf:dma_buf_export")
    assert tracing._plan(tp, ok, None) == (False, None, "tracepoint absent on this kernel")


def test_missing_concerns_ignore_fallbacks_that_were_not_needed():
    states = [HookState("a", "gup", "gup_fast_fallback", State.MISSING, None, "fentry refused (EPERM)"),
              HookState("b", "lifecycle", "dma_buf_export", State.NOT_NEEDED, None, "tracepoints"),
              HookState("c", "read", "syscalls:sys_enter_read", State.LIVE, "tracepoint", "present")]
    assert hooks.missing_concerns(states) == {"gup": "gup_fast_fallback: fentry refused (EPERM)"}


def test_a_missing_hook_is_missing_whatever_its_reason_says():
    """The state decides, not the sentence: a reason that happens to start "not needed" changes nothing."""
    state = HookState("a", "cpu_copy", "filemap_read", State.MISSING, None, "not needed, said nobody")
    assert hooks.missing_concerns([state]) == {"cpu_copy": "filemap_read: not needed, said nobody"}


def test_hook_json_keeps_the_v1_keys_and_adds_the_state():
    state = HookState("b", "lifecycle", "dma_buf_export", State.NOT_NEEDED, None, "tracepoints")
    assert state.to_dict() == {"program": "b", "concern": "lifecycle", "target": "dma_buf_export", "live": False,
                               "via": None, "reason": "tracepoints", "state": "not needed"}


def test_render_shows_not_traced_instead_of_zero_and_always_the_drops():
    text = render_text({"read": Counters(calls=2, bytes=8192, latency_ns=4000)},
                       {"cpu_copy": "filemap_read: fentry refused (EPERM)"}, dropped=0)
    row = next(line for line in text.splitlines() if line.startswith("read"))
    assert "n/t" in row and "8.0 KiB" in row and "2.0us" in row
    assert "not traced: cpu_copy: filemap_read: fentry refused (EPERM)" in text
    assert text.splitlines()[-1] == "dropped events: 0"


def test_json_nulls_untraced_fields():
    states = [HookState("a", "gup", "gup_fast_fallback", State.MISSING, None, "refused")]
    snap = trace_model.TraceSnapshot({}, {(1, "read"): Counters(calls=1)}, {}, {}, {}, {}, 3, states)
    out = snap.to_dict()
    assert out["paths"]["read"]["pinned_pages"] is None and out["paths"]["read"]["cpu_copied"] == 0
    assert out["dropped_events"] == 3 and out["missing"] == {"gup": "gup_fast_fallback: refused"}


def test_stack_ips_drop_trailing_zeros():
    raw = (ctypes.c_uint64 * 4)(0xffffffff81000000, 0xffffffff81000010, 0, 0)
    assert iopaths.decode_stack_ips(bytes(raw)) == [0xffffffff81000000, 0xffffffff81000010]


def test_plan_for_the_syscall_hooks_follows_tp_btf_and_raw_tracepoint():
    specs = {program.name: program for _, program in hooks.programs()}
    both = _report(tp_btf=Feature(True, "tp_btf", "ok"), raw_tracepoint=Feature(True, "raw_tp", "ok"))
    assert tracing._plan(specs["syscall_enter_btf"], both, None) == (True, "tp_btf", "ok")
    assert tracing._plan(specs["syscall_exit_raw"], both, None) == (True, "raw_tp", "ok")
    no_btf = _report(tp_btf=Feature(False, None, "EINVAL"), raw_tracepoint=Feature(True, "raw_tp", "ok"))
    assert tracing._plan(specs["syscall_enter_btf"], no_btf, None) == (False, None, "tp_btf not available (EINVAL)")
    assert specs["syscall_enter_raw"].fallback_for == "syscall_enter_btf"
    assert specs["lifecycle_fexit_export"].fallback_for == "lifecycle_dma_buf_export"


BACKING = ("lifecycle_udmabuf_backing_btf", "lifecycle_udmabuf_backing")  # tp_btf, and its fexit fallback


def _backing_states(tracefs, tracepoint, tp_btf, fentry):
    """The udmabuf backing programs' states as the Tracer plans them: a kernel with or without the dma_buf_export
    tracepoint (7.0+), tp_btf, and fentry on dma_buf_export."""
    if tracepoint:
        (tracefs / "events" / "dma_buf" / "dma_buf_export").mkdir(parents=True, exist_ok=True)
    report = _report(tp_btf=Feature(tp_btf, "tp_btf" if tp_btf else None, "ok" if tp_btf else "EINVAL"),
                     fentry=Feature(fentry, "fentry" if fentry else None, "ok" if fentry else "EPERM"),
                     fn__dma_buf_export=Feature(True, "fentry", "ok") if fentry else
                     Feature(False, None, "fentry refused (EPERM), kprobe refused (ENOENT)"))
    catalogue = [(point, program) for point, program in hooks.programs() if program.name in BACKING]
    plans = {program.name: tracing._plan(program, report, tracefs) for _, program in catalogue}
    statuses = {program.name: tracing._planned_state(point, program, plans[program.name], plans, report, None,
                                                     False, tracefs) for point, program in catalogue}
    statuses = tracing._served_by_fallbacks(statuses, catalogue)
    return tuple((statuses[name].state, statuses[name].via) for name in BACKING), hooks.missing_concerns(
        statuses.values())


def test_a_udmabufs_memfd_is_recorded_by_the_export_tracepoint_as_tp_btf_else_by_fexit(tmp_path):
    """tp_btf on the dma_buf_export tracepoint where the kernel has it (7.0+; fentry refused, as on the CI host,
    changes nothing), else fexit dma_buf_export; missing only when neither can attach."""
    live, not_needed, missing = State.LIVE, State.NOT_NEEDED, State.MISSING
    assert _backing_states(tmp_path / "a", True, True, True) == (((live, "tp_btf"), (not_needed, None)), {})
    assert _backing_states(tmp_path / "b", True, True, False) == (((live, "tp_btf"), (not_needed, None)), {})
    assert _backing_states(tmp_path / "c", True, False, True) == (((not_needed, None), (live, "fentry")), {})
    assert _backing_states(tmp_path / "d", False, True, True) == (((not_needed, None), (live, "fentry")), {})
    states, missing_concerns = _backing_states(tmp_path / "e", False, True, False)  # before 7.0 without fentry
    assert states == ((missing, None), (missing, None))
    assert missing_concerns == {"lifecycle": "dma_buf:dma_buf_export: tracepoint absent on this kernel"}
    (tmp_path / "f").mkdir()
    specs = {program.name: program for _, program in hooks.programs()}
    assert tracing._plan(specs[BACKING[0]], _report(tp_btf=Feature(True, "tp_btf", "ok")), tmp_path / "f") == \
        (False, None, "tracepoint absent on this kernel")
    assert specs[BACKING[1]].fallback_for == BACKING[0]


def _statuses(enter_btf, enter_raw, exit_btf, exit_raw):
    """The four syscall programs' states from (state, why) pairs."""
    given = {"syscall_enter_btf": enter_btf, "syscall_enter_raw": enter_raw,
             "syscall_exit_btf": exit_btf, "syscall_exit_raw": exit_raw}
    return {name: HookState(name, "syscalls", "sys", state,
                            ("tp_btf" if name.endswith("btf") else "raw_tp") if state is State.LIVE else None, why)
            for name, (state, why) in given.items()}


def test_syscall_hooks_are_reported_per_syscall_with_the_program_that_serves_them():
    states = tracing._syscall_hooks(_statuses((State.LIVE, "ok"), (State.NOT_NEEDED, "btf is used"),
                                              (State.MISSING, "load refused: EINVAL"), (State.LIVE, "fallback ok")))
    by_name = {hook.program: hook for hook in states}
    assert len(states) == 2 * len(hooks.SYSCALLS)
    assert (by_name["enter_pread64"].live, by_name["enter_pread64"].via) == (True, "tp_btf")
    assert (by_name["exit_preadv2"].live, by_name["exit_preadv2"].via) == (True, "raw_tp")
    assert by_name["exit_sendfile64"].concern == "sendfile" and by_name["enter_pwritev2"].concern == "write"
    assert hooks.missing_concerns(states) == {}


def test_syscall_hooks_missing_say_why_for_both_programs():
    states = tracing._syscall_hooks(_statuses((State.MISSING, "tp_btf not available"),
                                              (State.MISSING, "raw_tp not available"),
                                              (State.MISSING, "tp_btf not available"),
                                              (State.MISSING, "raw_tp not available")))
    missing = hooks.missing_concerns(states)
    assert set(missing) == {"read", "write", "copy_file_range", "sendfile", "splice"}
    assert missing["read"] == "raw_syscalls:sys_enter (read): tp_btf not available; raw_tp: raw_tp not available"


def test_every_hot_path_program_has_a_do_nothing_twin_on_the_same_hook():
    """benchmarks/overhead.py's floor attaches hook_floor's floor_<program> where each live program is."""
    from dmabuf_top.bpf import BpfObject

    hot = [program.name for point, program in hooks.programs()
           if point.concern in ("syscalls", "cpu_copy", "gup", "page_cache")
           and program.attach != hooks.ITER]  # an iterator runs once at attach, on no hook
    with BpfObject(object_path("iopaths")) as tracer, BpfObject(object_path("hook_floor")) as floor:
        sections = {name: floor.programs[f"floor_{name}"].section for name in hot if f"floor_{name}" in floor.programs}
        assert sections == {name: tracer.program(name).section for name in hot}


def _vfs_report(refused=()):
    """Every VFS-path function trialled fine but those in `refused`; tp_btf and the task_vma iterator work."""
    features = {"fentry": Feature(True, "fentry"), "tp_btf": Feature(True, "tp_btf", "ok"),
                "raw_tracepoint": Feature(True, "raw_tp", "ok"), "iter__task_vma": Feature(True, "iter", "ok")}
    for function in (*hooks.VFS_FUNCTIONS.values(), "mmap_region"):
        features[f"fn__{function}"] = Feature(False, None, "fentry refused (EPERM)") if function in refused \
            else Feature(True, "fentry", "ok")
    return _report(**features)


def test_the_vfs_path_is_planned_whole_or_not_at_all():
    """One VFS function fentry refuses takes the whole VFS path out: half of it beside the syscall tracepoints
    would leave calls that neither opens (or count some twice)."""
    catalogue = hooks.programs()
    plan = tracing._plans_by_group(catalogue, {p.name: tracing._plan(p, _vfs_report(), None) for _, p in catalogue})
    vfs = [p.name for _, p in catalogue if p.group == hooks.VFS_PATH]
    assert vfs and all(plan[name][0] for name in vfs)
    plan = tracing._plans_by_group(catalogue, {p.name: tracing._plan(p, _vfs_report(refused=("do_splice",)), None)
                                               for _, p in catalogue})
    assert not any(plan[name][0] for name in vfs)
    assert "EPERM" in plan["splice_enter"][2]
    assert plan["vfs_read_enter"][2] == "with splice_enter: fentry refused (EPERM)"
    assert tracing.planned_attribution(_vfs_report())[0] == "vfs"
    where, why = tracing.planned_attribution(_vfs_report(refused=("mmap_region",)))
    assert where == "syscalls" and "shared_memory_mmap" in why


def test_the_syscall_tracepoints_are_the_vfs_paths_fallback():
    specs = {program.name: program for _, program in hooks.programs()}
    for name in ("syscall_enter_btf", "syscall_exit_btf", hooks.BATCH_FLUSH_PROGRAM):
        assert specs[name].fallback_for == hooks.SYSCALL_FALLBACK_FOR
    assert specs[hooks.SYSCALL_FALLBACK_FOR].group == hooks.VFS_PATH
    assert set(hooks.SYSCALL_VFS_PROGRAMS) == set(hooks.SYSCALLS)  # every traced syscall has its VFS function


def test_syscall_hooks_name_the_vfs_function_that_serves_them_when_the_vfs_path_is_live():
    statuses = _statuses(*[(State.NOT_NEEDED, "the VFS path is used")] * 4)
    for _, program in hooks.programs():
        if program.group == hooks.VFS_PATH:
            statuses[program.name] = HookState(program.name, "syscalls", program.target, State.LIVE, "fentry", "ok")
    by_name = {hook.program: hook for hook in tracing._syscall_hooks(statuses)}
    assert len(by_name) == 2 * len(hooks.SYSCALLS)
    assert (by_name["enter_pread64"].live, by_name["enter_pread64"].via) == (True, "fentry")
    assert by_name["enter_pread64"].target == "vfs_read (pread64)"
    assert by_name["exit_sendfile64"].target == "do_sendfile (sendfile64)"
    assert by_name["exit_sendfile64"].concern == "sendfile"


def test_a_refused_vfs_path_is_not_needed_when_the_syscall_tracepoints_serve_it():
    catalogue = hooks.programs()
    statuses = _statuses((State.LIVE, "ok"), (State.NOT_NEEDED, "btf"), (State.LIVE, "ok"), (State.NOT_NEEDED, "btf"))
    for _, program in catalogue:
        statuses.setdefault(program.name, HookState(program.name, "x", program.target, State.MISSING, None,
                                                    "fentry refused (EPERM)" if program.group else "other"))
    tracing._covered_by_fallback(statuses, catalogue)
    assert statuses["vfs_read_enter"].state is State.NOT_NEEDED
    assert "syscall_enter_btf" in statuses["vfs_read_enter"].why
    assert statuses["gup_fast_enter"].missing  # not in the group: untouched


def test_the_shared_memory_keepers_are_a_group_of_their_own_and_not_needed_when_refused():
    """fork, exec and the seeding iterators keep shared_memory_tgids (and fd_holder_tgids) for either path (on the
    syscall path mmap's and shmat's exits set the bits, on the VFS path mmap_region): refused, every call takes the
    exact path."""
    catalogue = hooks.programs()
    keepers = {p.name for _, p in catalogue if p.group == hooks.SHARED_MEMORY}
    assert keepers == {"shared_memory_fork", "shared_memory_exec", "shared_memory_seed", "fd_holder_seed"}
    statuses = {p.name: HookState(p.name, "syscalls", p.target, State.MISSING, None, "EPERM") for _, p in catalogue}
    tracing._shared_memory_not_needed(statuses, catalogue)
    assert all(statuses[name].state is State.NOT_NEEDED and "exact path" in statuses[name].why for name in keepers)
    assert statuses["vfs_read_enter"].missing
