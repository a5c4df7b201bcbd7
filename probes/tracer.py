"""The Tracer: loads iopaths.bpf.o and buffer_lifecycle.bpf.o with the hooks this kernel allows, attaches
them, reads their maps.

    with Tracer() as tracer:               # feature detection picks what to attach
        ... the workload ...
        snap = tracer.snapshot()           # a trace_model.TraceSnapshot: cumulative counters since start
    tracer.hooks                           # every hook with its HookState: live, missing or not needed, and why

Counters are cumulative in kernel maps (never drained), so two readers never
steal from each other; `Counters.__sub__` gives the delta between two reads.
Concerns whose hooks are missing are reported in `hooks` (hooks.missing_concerns), so
"not traced" is never shown as zero. Per-event records go through a ring buffer
only with `record=True`; failed reservations are counted in `dropped`.
The programs and where they attach come from the hook catalogue (probes/hooks.py), the one doctor trials.
"""
import ctypes
import dataclasses
import os
from typing import List

from .. import features as feature_detection
from ..bpf import BpfAttachError, BpfLoadError, BpfObject, RingBuffer, libbpf
from ..errors import BpfError
from ..kernelfs import Kallsyms, has_cgroups, tracefs_root, tracepoint_exists
from ..trace_model import TraceSnapshot
from . import buffer_lifecycle, iopaths, object_path
from .hooks import (
    BATCH_FLUSH_PROGRAM,
    FENTRY,
    ITER,
    LIFECYCLE_OBJECT,
    RAW_TP,
    SHARED_MEMORY,
    SYSCALL_CONCERN,
    SYSCALL_VFS_PROGRAMS,
    SYSCALLS,
    TP_BTF,
    TRACEPOINT,
    VFS_FUNCTIONS,
    VFS_PATH,
    HookState,
    State,
    programs,
)
from .iopaths import Counters

RINGBUF_HEADER = 8  # BPF_RINGBUF_HDR_SZ: each record's length word and page offset
IOPATHS_OBJECT = "iopaths"
# Loaded and attached in this order, so that reading iopaths.bpf.o (libbpf reads the file) is the last read
# before its I/O hooks are up, and a traced process's own reads are not counted. iopaths fills buffer_lifecycle's
# traced_tgids (the children both follow).
OBJECTS = (LIFECYCLE_OBJECT, IOPATHS_OBJECT)
# Each object's ring buffer records: the decoder and the smallest record it holds.
RECORD_KINDS = {IOPATHS_OBJECT: (iopaths.decode_record, ctypes.sizeof(iopaths.IoRecordC)),
                LIFECYCLE_OBJECT: (buffer_lifecycle.decode_record, ctypes.sizeof(buffer_lifecycle.LifecycleRecordC))}


def _plan(program, report, tracefs):
    """(load it?, via, why) for one catalogue Program, from the feature report."""
    if program.lacks_tracepoint(tracefs):
        return False, None, "tracepoint absent on this kernel"
    if program.attach == TRACEPOINT:
        return True, TRACEPOINT, "present"
    if program.attach == ITER:
        feature = report.features.get(f"iter/{program.target}")
        if feature is not None and feature.available:
            return True, ITER, feature.detail
        return False, None, f"iter/{program.target} not available" + (f" ({feature.detail})" if feature else "")
    if program.attach in (TP_BTF, RAW_TP):
        feature = report.features.get("tp_btf" if program.attach == TP_BTF else "raw_tracepoint")
        if feature is not None and feature.available:
            return True, program.attach, feature.detail
        return False, None, f"{program.attach} not available" + (f" ({feature.detail})" if feature else "")
    feature = report.features.get(f"fn/{program.target}")
    if feature is None:  # a report without hook trials (detect() trials every catalogue function): try it
        if report.available("fentry"):
            return True, FENTRY, "not trialled by doctor; tried at load"
        return False, None, f"fentry refused ({report.features['fentry'].detail})" if "fentry" in report.features \
            else "fentry not available"
    if feature.available and feature.via == FENTRY:
        return True, FENTRY, feature.detail
    if feature.available:
        return False, None, (f"only {feature.via} works here and dmabuf-top has no {feature.via} variant yet: "
                             f"{feature.detail}")
    return False, None, feature.detail


def _planned_state(point, program, plan, plans, report, pid, follow_children, tracefs):
    """The HookState a program starts with: live if planned, else missing, or not needed when nothing is lost."""
    load, via, why = plan
    if point.config and _path_not_built(point, report, tracefs):
        return HookState(program.name, point.concern, program.target, State.NOT_NEEDED, None,
                         f"this kernel has no such path ({point.config} is off)")
    if program.fallback_for and plans[program.fallback_for][0]:
        return HookState(program.name, point.concern, program.target, State.NOT_NEEDED, None,
                         f"{program.fallback_for} is used")
    if point.concern == "children" and not (pid and follow_children):
        return HookState(program.name, point.concern, program.target, State.NOT_NEEDED, None, "no process to follow")
    if point.patched_only and _absent_from_kernel(report, program.target):
        return HookState(program.name, point.concern, program.target, State.NOT_NEEDED, None,
                         "this kernel has no such path (unpatched)")
    return HookState(program.name, point.concern, program.target, State.LIVE if load else State.MISSING, via, why)


def _served_by_fallbacks(statuses, catalogue):
    """A program that is not live while its fallback is (tp_btf refused, raw_tp attached) loses nothing: it is
    not needed, with its own reason kept, so its concern is not reported missing (never n/t while traced)."""
    out = dict(statuses)
    for _, program in catalogue:
        if not program.fallback_for or not out[program.name].live:
            continue
        for name in (program.fallback_for, *program.also_replaces):
            primary = out.get(name)
            if primary is not None and not primary.live:
                out[name] = dataclasses.replace(primary, state=State.NOT_NEEDED, via=None,
                                                why=f"{primary.why}; {program.name} is used")
    return out


def _plans_by_group(catalogue, plans):
    """A group (the VFS path) is planned whole or not at all: one member that cannot load takes the rest out."""
    for group in {program.group for _, program in catalogue if program.group}:
        members = [program.name for _, program in catalogue if program.group == group]
        refused = [name for name in members if not plans[name][0]]
        if refused:
            why = f"{refused[0]}: {plans[refused[0]][2]}"
            for name in members:
                plans[name] = (False, None, plans[name][2] if name == refused[0] else f"with {why}")
    return plans


def planned_attribution(report):
    """(where attribution records open, why), as a Tracer on this kernel would plan it from the feature
    trials (doctor shows it): "vfs" (fentry on the VFS functions), else "syscalls" (the syscall tracepoints).
    A load can still refuse what the trials allowed: the Tracer then falls back, and its hooks say so."""
    catalogue = [(point, program) for point, program in programs() if program.group == VFS_PATH]
    plans = _plans_by_group(catalogue, {program.name: _plan(program, report, tracefs_root())
                                        for _, program in catalogue})
    if all(plan[0] for plan in plans.values()):
        return VFS_PATH, "fentry/fexit on " + ", ".join(VFS_FUNCTIONS.values()) + \
            ": syscalls that move no data pass through no program"
    refused = next(program.name for _, program in catalogue if not plans[program.name][0])
    return "syscalls", f"the raw syscall tracepoints: the VFS path is refused ({refused}: {plans[refused][2]})"


def _vfs_live(statuses):
    return any(status.live for status in statuses.values() if status.program in _VFS_GROUP)


_VFS_GROUP = frozenset(program.name for _, program in programs() if program.group == VFS_PATH)


def _syscall_hooks(statuses):
    """The program pairs that open and close attribution records, reported as a pair of hooks per syscall:
    enter_read, exit_read... (at the VFS functions where they are live, else on the syscall tracepoints)."""
    if _vfs_live(statuses):
        return [HookState(f"{phase}_{syscall}", path, f"{VFS_FUNCTIONS[SYSCALL_VFS_PROGRAMS[syscall]]} ({syscall})",
                          State.LIVE, FENTRY, statuses[f"{SYSCALL_VFS_PROGRAMS[syscall]}_{phase}"].why)
                for phase in ("enter", "exit") for syscall, path in SYSCALLS.items()]
    hooks = []
    for phase in ("enter", "exit"):
        primary, fallback = statuses[f"syscall_{phase}_btf"], statuses[f"syscall_{phase}_raw"]
        used = primary if primary.live else fallback if fallback.live else None
        why = used.why if used else f"{primary.why}; raw_tp: {fallback.why}"
        for syscall, path in SYSCALLS.items():
            hooks.append(HookState(f"{phase}_{syscall}", path, f"raw_syscalls:sys_{phase} ({syscall})",
                                   State.LIVE if used else State.MISSING, used.via if used else None, why))
    return hooks


def _path_not_built(point, report, tracefs):
    """A path the kernel was built without: none of its tracepoints is in tracefs and none of its functions in
    BTF or kallsyms (an unreadable tracefs or a report without trials proves nothing)."""
    if point.tracepoints and (tracefs is None or any(tracepoint_exists(tracefs, tp) for tp in point.tracepoints)):
        return False
    return all(report.features.get(f"fn/{function}") is not None and
               report.features[f"fn/{function}"].detail == feature_detection.ABSENT
               for function in point.functions)


def _covered_by_fallback(statuses, catalogue):
    """The VFS path not live while the syscall tracepoints are: nothing is lost, so its programs are not needed."""
    used = next((statuses[name] for name in ("syscall_enter_btf", "syscall_enter_raw") if statuses[name].live), None)
    if used is None:
        return
    for _, program in catalogue:
        if program.group == VFS_PATH and statuses[program.name].missing:
            statuses[program.name] = dataclasses.replace(
                statuses[program.name], state=State.NOT_NEEDED,
                why=f"{statuses[program.name].why}; the syscall tracepoints are used ({used.program})")


def _served_within(statuses, catalogue, plans):
    """A program whose work is done inside others (Program.within) is live only while one of them is, and is
    attached as that one is. A container not needed otherwise (the syscall programs beside a live VFS path,
    AIO's fentry refused) is loaded for it: .rodata (vfs_path) then keeps it to that work."""
    for _, program in catalogue:
        status = statuses[program.name]
        if not program.within or not status.live:
            continue
        container = next((statuses[name] for name in program.within if statuses[name].live), None)
        planned = next((name for name in program.within if plans[name][0] and not statuses[name].missing), None)
        if container is None and planned is not None:
            _, via, why = plans[planned]
            container = statuses[planned] = dataclasses.replace(statuses[planned], state=State.LIVE, via=via,
                                                                why=f"for {program.name}: {why}")
        if container is None:
            statuses[program.name] = dataclasses.replace(
                status, state=State.MISSING, via=None,
                why=f"its work is done in {' or '.join(program.within)}, which is not live here")
        else:
            statuses[program.name] = dataclasses.replace(status, via=container.via,
                                                         why=f"done in {container.program} ({container.why})")


def _shared_memory_not_needed(statuses, catalogue):
    """The programs that keep shared_memory_tgids refused: nothing is lost (every read and write takes the
    exact path), so they are not needed rather than missing."""
    for _, program in catalogue:
        if program.group == SHARED_MEMORY and statuses[program.name].missing:
            statuses[program.name] = dataclasses.replace(
                statuses[program.name], state=State.NOT_NEEDED,
                why=f"{statuses[program.name].why}; every read and write takes the exact path")


def _own_program(program):
    """A catalogue Program that is a BPF program attached to a hook (not an iterator, not done within another)."""
    return program.attach != ITER and not program.within


def _absent_from_kernel(report, function):
    """The function is in neither BTF nor kallsyms (features.detect said so): nothing there to trace."""
    feature = report.features.get(f"fn/{function}")
    return feature is not None and not feature.available and feature.detail == feature_detection.ABSENT_UNPATCHED


class Tracer:
    """Loads iopaths.bpf.o and buffer_lifecycle.bpf.o with the hooks this kernel allows and attaches them.

    pid: trace one process (tgid) only; with follow_children, also every process it
    forks from now on (a sched_process_fork program fills a tgid set). ignore_self: leave the tracer's own
    syscalls out (set False to trace work done in this very process, as tests do).
    report: a FeatureReport to reuse (else detected now). record: per-event ring buffer.
    io_records: with record, the I/O records and stacks too; False: only the lifecycle probe's records and
    allocation stacks (leaks: the I/O programs keep their counters and ring nothing, a small ring and stack map).
    debug_tgid (tests): count that process's reads and writes that go past the syscall path's fast exit
    (rw_past_fast_exit).
    """

    def __init__(self, pid=None, record=False, stacks=True, report=None, ignore_self=True, follow_children=False,
                 max_entries=None, io_records=True, debug_tgid=0):
        feature_detection.require_bpf_privileges("I/O path tracing")
        self._max_entries = dict(max_entries or {})  # {map name: entries}: other sizes than the object's (tests)
        self.report = report or feature_detection.detect()
        self.record = record
        self._io_records = io_records
        self.hooks: List[HookState] = []
        self._obj = None  # iopaths
        self._objs = {}  # every loaded object by name (OBJECTS)
        self._ring = None
        self._records = []
        self._kallsyms = None
        self._target_keys, self._decoded_targets = {}, {}
        tracefs = tracefs_root()
        self._catalogue = programs()
        self._object_of = {program.name: program.object for _, program in self._catalogue}
        self._plans = _plans_by_group(self._catalogue, {program.name: _plan(program, self.report, tracefs)
                                                        for _, program in self._catalogue})
        statuses = {program.name: _planned_state(point, program, self._plans[program.name], self._plans,
                                                 self.report, pid, follow_children, tracefs)
                    for point, program in self._catalogue}
        self._rodata_values = dict(target_tgid=pid or 0, ignore_tgid=os.getpid() if ignore_self else 0,
                                   record_events=record, collect_stacks=stacks,
                                   follow_children=bool(pid and follow_children), debug_tgid=debug_tgid)
        try:
            for object_name in OBJECTS:
                self._objs[object_name] = self._load_and_attach(object_name, statuses)
            self._obj = self._objs[IOPATHS_OBJECT]
            if record:  # one reader for both rings: a poll waits on either
                rings = OBJECTS[::-1] if io_records else (LIFECYCLE_OBJECT,)
                self._ring = RingBuffer(self._objs[rings[0]].map("records"), self._record_decoder(rings[0]))
                for object_name in rings[1:]:
                    self._ring.add(self._objs[object_name].map("records"), self._record_decoder(object_name))
        except BaseException:
            self.close()
            raise
        statuses = _served_by_fallbacks(statuses, self._catalogue)
        _covered_by_fallback(statuses, self._catalogue)
        _shared_memory_not_needed(statuses, self._catalogue)
        self.programs = statuses
        self.hooks = _syscall_hooks(statuses) + [s for s in statuses.values() if s.concern != SYSCALL_CONCERN]

    @property
    def attached_programs(self):
        """The live programs attached to a hook of their own (benchmarks put a do-nothing twin on each)."""
        own = {program.name for _, program in self._catalogue if _own_program(program)}
        return [name for name, status in self.programs.items() if status.live and name in own]

    @property
    def attribution(self):
        """Where attribution records open: "vfs" (fentry on the VFS functions) or "syscalls" (tracepoints)."""
        return VFS_PATH if _vfs_live(self.programs) else "syscalls"

    def _load_and_attach(self, object_name, statuses):
        """Load one object with its catalogue programs (others in it stay unloaded); returns the BpfObject.

        A program the verifier or the kernel refuses is dropped with its reason, and its fallback
        (if any) takes its place in a fresh load; the rest still load."""
        mine = {name: status for name, status in statuses.items() if self._object_of[name] == object_name}
        for _ in range(2 * len(mine) + 1):
            obj = BpfObject(object_path(object_name))
            rodata = dict(self._rodata_values)
            debug_tgid = rodata.pop("debug_tgid")
            if object_name == IOPATHS_OBJECT:
                rodata["debug_tgid"] = debug_tgid
                rodata["possible_cpus"] = libbpf().libbpf_num_possible_cpus()
                _served_within(statuses, self._catalogue, self._plans)
                rodata["batch_calls"] = statuses[BATCH_FLUSH_PROGRAM].live
                rodata["vfs_path"] = _vfs_live(statuses)
                rodata["shared_memory_known"] = all(statuses[program.name].live for _, program in self._catalogue
                                                    if program.group == SHARED_MEMORY)
                rodata["aio_syscalls"] = any(statuses[program.name].live for _, program in self._catalogue
                                             if program.within)
                obj.map("traced_tgids").reuse_fd(self._objs[LIFECYCLE_OBJECT].map("traced_tgids").fd)
                if not self._io_records:  # counters only: no records, no I/O stacks
                    rodata.update(record_events=False, collect_stacks=False)
                    obj.map("records").max_entries = os.sysconf("SC_PAGE_SIZE")
                    obj.map("stack_traces").max_entries = 1
            else:
                rodata["read_cgroup"] = has_cgroups()  # else the verifier refuses every program that exports
                if not self.record or not rodata["collect_stacks"]:  # no stacks: 9 MiB of stack maps unused
                    for name in buffer_lifecycle.STACK_MAPS:
                        obj.map(name).max_entries = 1
                elif not self._io_records:  # leaks and the live view: allocation stacks to group by, read at once
                    buffer_lifecycle.shorten_stacks(obj, buffer_lifecycle.LEAKS_STACK_DEPTH)
                if not self.record:  # per-inode counts only: no records
                    obj.map("records").max_entries = os.sysconf("SC_PAGE_SIZE")
            obj.set_rodata(**rodata)
            for name, entries in self._max_entries.items():
                if name in obj.maps:
                    obj.map(name).max_entries = entries
            for _, program in self._catalogue:
                if program.name in mine and not program.within:
                    obj.program(program.name).autoload = statuses[program.name].live
            try:
                obj.load()
            except BpfLoadError as error:
                obj.close()
                if error.program not in mine or not statuses[error.program].live:
                    raise
                self._refused(statuses, error.program, f"load refused: {error}")
                continue
            failed = self._attach(obj, mine, statuses)
            if not failed:
                failed = not self._seed(obj, mine, statuses)
            if not failed:
                if object_name == IOPATHS_OBJECT:
                    _fast_path_seeded(obj, True)
                return obj
            obj.close()  # a fallback replaces a program whose attach failed: load again with it
        raise BpfError(f"{object_name}: no set of programs could be loaded")

    def _refused(self, statuses, name, why):
        """Mark a program refused (missing), and the rest of its group with it; enable their fallbacks.
        True when a fallback was enabled."""
        group = next(program.group for _, program in self._catalogue if program.name == name)
        names = [program.name for _, program in self._catalogue if group and program.group == group] or [name]
        enabled = False
        for member in names:
            statuses[member] = dataclasses.replace(statuses[member], state=State.MISSING, via=None,
                                                   why=why if member == name else f"with {name}: {why}")
        for _, program in self._catalogue:
            if program.fallback_for in names and self._plans[program.name][0] and not statuses[program.name].live:
                _, via, planned_why = self._plans[program.name]
                statuses[program.name] = dataclasses.replace(statuses[program.name], state=State.LIVE, via=via,
                                                             why=planned_why)
                enabled = True
        return enabled

    def _attach(self, obj, mine, statuses):
        """Attach every loaded program of obj; True when a refused one has a fallback to load instead."""
        reload = False
        for _, program in self._catalogue:
            if program.name not in mine or not statuses[program.name].live or not _own_program(program):
                continue
            try:
                obj.program(program.name).attach()
            except BpfAttachError as error:
                # A refused shared-memory keeper: load again with shared_memory_known off (.rodata)
                reload |= self._refused(statuses, program.name, f"attach refused: {error}") or \
                    program.group == SHARED_MEMORY
        return reload

    def _seed(self, obj, mine, statuses):
        """Run obj's live iterators once (the VFS path's: which processes already map shared memory), after the
        hooks that keep their answer up to date are attached. False when one was refused (a fallback is enabled)."""
        for _, program in self._catalogue:
            if program.name not in mine or program.attach != ITER or not statuses[program.name].live:
                continue
            try:
                obj.program(program.name).read_iter()
            except BpfError as error:
                if not self._refused(statuses, program.name, f"iterator refused: {error}") and \
                        program.group != SHARED_MEMORY:
                    raise
                return False
        return True

    def detach(self):
        """Take every program off its hook, keeping them loaded and the counters as they are."""
        for obj in self._objs.values():
            obj.detach_all()

    def reattach(self):
        """Put the live programs back on their hooks after detach(), and run the iterators again
        (mappings made and fds installed while detached: until then no read or write takes the fast exit)."""
        _fast_path_seeded(self._obj, False)
        for name in self.attached_programs:
            self._objs[self._object_of[name]].program(name).attach()
        if self._seed(self._obj, {name for name in self.programs if self._object_of[name] == IOPATHS_OBJECT},
                      self.programs):
            _fast_path_seeded(self._obj, True)

    def rw_past_fast_exit(self):
        """Tests (debug_tgid): that process's reads and writes that went past the syscall path's fast exit."""
        bss = next(m for m in self._obj.maps.values() if m.name.endswith(".bss"))
        offset, size = self._obj.datasec_layout(".bss")["debug_rw_past_fast_exit"]
        return int.from_bytes(bss.lookup(bytes(4))[offset:offset + size], "little")

    # -- reading

    def _reseed_on_the_syscall_path(self):
        """On the syscall path only mmap's and shmat's exits set a process's shared-memory bit; a mapping a
        driver makes inside an ioctl (vm_mmap) reaches neither, and the process's reads into it would pass
        uncounted. The seeding iterator sees every mapping, so each snapshot runs it again: such a miss
        lasts one interval at most. (On the VFS path mmap_region's fentry sees them all.)"""
        seed = self.programs.get("shared_memory_seed")
        every_call_exact = bool(self._rodata_values["target_tgid"])  # one process traced: the bit is not asked
        if seed is not None and seed.live and self.attribution != VFS_PATH and not every_call_exact:
            self._obj.program("shared_memory_seed").read_iter()

    def snapshot(self, minimal=False):
        """Cumulative counters now. minimal: only what a delta reader of targets, tasks and stacks
        needs (record): page cache and lifecycle are left empty, as reading every entry
        of maps it does not use costs seconds per poll on a slow machine under churn."""
        self._reseed_on_the_syscall_path()
        maps = self._obj.maps
        by_target = {}
        self._target_keys = {}  # for forget(): the raw key of each decoded target
        decoded = {}
        for k, v in maps["io_by_target"].lookup_all():
            # An entry whose bytes did not change since the last snapshot keeps its decoded Counters:
            # under churn most entries are idle (buffers gone), and decoding is the cost.
            known = self._decoded_targets.get(k)
            if known is None:
                target = iopaths.decode_target(k)
                counters = _sum_cpus(maps["io_by_target"], v, Counters.from_raw)
            else:
                target = known[1]
                counters = known[2] if known[0] == v else _sum_cpus(maps["io_by_target"], v, Counters.from_raw)
            self._target_keys[target] = k
            decoded[k] = (v, target, counters)
            by_target[target] = counters
        self._decoded_targets = decoded
        by_task, outcomes = iopaths.tasks_and_outcomes(
            (*iopaths.decode_task(k), _sum_cpus(maps["io_by_task"], v, Counters.from_raw))
            for k, v in maps["io_by_task"].lookup_all())
        stacks = dict(iopaths.decode_stack_key(k, v) for k, v in maps["stack_counts"].lookup_all())
        if minimal:
            pagecache, lifecycle = {}, {}
        else:
            pagecache = dict(iopaths.decode_pagecache(k, v) for k, v in maps["pagecache_by_file"].items())
            lifecycle = dict(buffer_lifecycle.decode_counts(k, v)
                             for k, v in self._objs[LIFECYCLE_OBJECT].map("lifecycle_counts").items())
        return TraceSnapshot(by_target, by_task, outcomes, pagecache, lifecycle, stacks, self.dropped(),
                             list(self.hooks), self.map_full())

    def forget(self, targets=()):
        """Delete the counters of these targets (keys of the last snapshot's by_target) once their
        last delta is taken. For a reader that owns this Tracer (record): it keeps io_by_target from
        filling with buffers that are gone, which would then refuse new ones. A key written again
        later comes back from zero, which a delta reader counts as new. Returns how many were deleted."""
        deleted = 0
        io_map = self._obj.map("io_by_target")
        for target in targets:
            raw = self._target_keys.pop(target, None)
            if raw is not None and io_map.delete(raw):
                deleted += 1
                self._decoded_targets.pop(raw, None)
        return deleted

    def map_full(self):
        """{map name: new keys it refused because it was full}, for every map whose counts that loses:
        what those keys carried (a target's bytes, a process's calls, a child to follow) is not counted."""
        counts = {}
        for object_name, names in ((IOPATHS_OBJECT, iopaths.COUNTED_MAPS),
                                   (LIFECYCLE_OBJECT, buffer_lifecycle.COUNTED_MAPS)):
            full = self._objs[object_name].map("map_full")
            for index, name in enumerate(names):
                counts[name] = _percpu_sum(full, index)
        return counts

    def dropped(self):
        """Ring buffer records lost because a ring buffer was full (0 when not recording)."""
        return sum(_percpu_sum(obj.map("dropped"), 0) for obj in self._objs.values())

    def stack_ips(self, stack_id):
        if stack_id < 0:
            return []
        raw = self._obj.map("stack_traces").lookup(stack_id.to_bytes(4, "little", signed=True))
        return iopaths.decode_stack_ips(raw) if raw else []

    def alloc_stack_ips(self, stack_id):
        """A lifecycle record's kernel_stack id -> its instruction pointers, innermost first."""
        if stack_id < 0:
            return []
        raw = self._objs[LIFECYCLE_OBJECT].map("alloc_stacks").lookup(stack_id.to_bytes(4, "little", signed=True))
        return iopaths.decode_stack_ips(raw) if raw else []

    def alloc_user_stack(self, stack_id):
        """A lifecycle record's user_stack id -> [buffer_lifecycle.UserFrame], innermost first."""
        if stack_id < 0:
            return []
        raw = self._objs[LIFECYCLE_OBJECT].map("alloc_user_stacks").lookup(
            stack_id.to_bytes(4, "little", signed=True))
        return buffer_lifecycle.decode_user_stack(raw) if raw else []

    def kallsyms(self):
        if self._kallsyms is None:
            self._kallsyms = Kallsyms.from_file()
        return self._kallsyms

    def _record_decoder(self, object_name):
        decode = RECORD_KINDS[object_name][0]
        return lambda raw: self._records.append(decode(raw))

    def poll_records(self, timeout_ms=100, max_records=None):
        """Records seen since the last call (needs record=True), at most max_records, in time order
        (the two rings are read one after the other: a buffer's export then comes before the I/O into it)."""
        if self._ring is None:
            raise BpfError("per-event records need Tracer(record=True)")
        self._ring.poll(timeout_ms, limit=max_records)
        records, self._records = self._records, []
        records.sort(key=lambda record: record.timestamp_ns)
        return records

    def drain_records(self, max_records=None):
        """Every record waiting in the ring buffer (at most max_records), without waiting for more.

        Without a bound a reader slower than the producers never returns, its list growing all
        the while; ring_capacity is a bound that cannot lose what the ring holds at the call."""
        records = []
        while max_records is None or len(records) < max_records:
            batch = self.poll_records(timeout_ms=0,
                                      max_records=None if max_records is None else max_records - len(records))
            if not batch:
                break
            records += batch
        return records

    @property
    def ring_capacity(self):
        """The most records the ring buffers can hold at once (each full of its smallest kind)."""
        return sum(self._objs[name].map("records").max_entries // ((RINGBUF_HEADER + smallest + 7) // 8 * 8)
                   for name, (_, smallest) in RECORD_KINDS.items()
                   if self._io_records or name == LIFECYCLE_OBJECT)  # 8-aligned slots

    def close(self):
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        for obj in self._objs.values():
            obj.close()
        self._objs = {}
        self._obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fast_path_seeded(obj, seeded):
    """iopaths.bpf.c's fast_path_state: the seeding iterators have run since the last attach (the per-CPU
    flags may then say "no interest"), or not: then every CPU's flag is cleared too (the programs are detached,
    so no context switch sets one again before the iterators have run)."""
    if not seeded:
        flags = obj.map(".data.no_interest_here")  # the section holds the flags alone (iopaths.bpf.c)
        flags.update(bytes(4), bytes(flags.value_size))
    obj.map("fast_path_state").update(bytes(4), int(seeded).to_bytes(4, "little"))


def _percpu_sum(array, index):
    """A per-CPU array's u64 slot, summed over the CPUs."""
    raw = array.lookup(index.to_bytes(4, "little"))
    return sum(int.from_bytes(v, "little") for v in array.split_percpu(raw)) if raw else 0


def _sum_cpus(bpf_map, raw, decode):
    """A per-CPU map value: decode each CPU's copy and add them up."""
    values = [decode(part) for part in bpf_map.split_percpu(raw)]
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total
