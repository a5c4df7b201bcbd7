"""I/O path tracing: bytes, CPU copies, pins, page-cache pages and latency per buffer x path and per process.

    with Tracer() as tracer:               # feature detection picks what to attach
        ... the workload ...
        snap = tracer.snapshot()           # cumulative counters since start
    snap.per_path()["read"].cpu_copied
    per_buffer(snap, read_buffers())       # keyed by dma-buf inode (udmabufs through their memfd)
    tracer.hooks                           # live and missing hooks, each with the reason

Counters are cumulative in kernel maps (never drained), so two readers never
steal from each other; `Counters.__sub__` gives the delta between two reads.
Paths whose hooks are missing are reported in `hooks`/`missing_concerns()`, so
"not traced" is never shown as zero. Per-event records go through a ring buffer
only with `record=True`; failed reservations are counted in `dropped`.
"""
import bisect
import ctypes
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import features as feature_detection
from .bpf import BpfAttachError, BpfLoadError, BpfObject, RingBuffer
from .errors import BpfError
from .probes import iopaths, object_path
from .probes.iopaths import Counters

# The syscalls that open an attribution record, and the path each belongs to. One program on the
# raw sys_enter/sys_exit tracepoints handles them all (iopaths.bpf.c tells them by number); each is
# still reported as its own pair of hooks (enter_read, exit_read...), so "is read traced?" has an answer.
SYSCALLS = {
    "read": "read", "pread64": "read", "readv": "read", "preadv": "read", "preadv2": "read",
    "write": "write", "pwrite64": "write", "writev": "write", "pwritev": "write", "pwritev2": "write",
    "copy_file_range": "copy_file_range", "sendfile64": "sendfile", "splice": "splice",
}
SYSCALL_CONCERN = "syscalls"
BATCH_FLUSH_PROGRAM = "flush_on_switch"

LIFECYCLE_TRACEPOINTS = ("dma_buf_export", "dma_buf_fd", "dma_buf_get", "dma_buf_put", "dma_buf_mmap",
                         "dma_buf_mmap_internal", "dma_buf_dynamic_attach", "dma_buf_detach")

RINGBUF_HEADER = 8  # BPF_RINGBUF_HDR_SZ: each record's length word and page offset

# The copy helpers themselves: reported, and used when a kernel lets us (none we met does).
COPY_HELPERS = ("copy_page_to_iter", "_copy_to_iter", "copy_folio_from_iter_atomic", "_copy_from_iter")


@dataclass(frozen=True)
class ProgramSpec:
    program: str
    concern: str
    attach: str  # "tracepoint", "tp_btf", "raw_tp" or "fentry" (fentry/fexit: the section says which)
    target: str  # "category:event", a raw tracepoint, or a kernel function
    primary: str = ""  # a fallback: loaded only when this program is not live


def program_specs():
    # The syscall hook: BTF-typed raw tracepoint (plain loads of the registers), else a raw_tp.
    specs = [
        ProgramSpec("syscall_enter_btf", SYSCALL_CONCERN, "tp_btf", "sys_enter"),
        ProgramSpec("syscall_exit_btf", SYSCALL_CONCERN, "tp_btf", "sys_exit"),
        ProgramSpec("syscall_enter_raw", SYSCALL_CONCERN, "raw_tp", "sys_enter", primary="syscall_enter_btf"),
        ProgramSpec("syscall_exit_raw", SYSCALL_CONCERN, "raw_tp", "sys_exit", primary="syscall_exit_btf"),
        # Flushes a thread's run of same-keyed calls when it is switched out; without it every call
        # updates the maps itself (iopaths.bpf.c, struct call_batch).
        ProgramSpec(BATCH_FLUSH_PROGRAM, SYSCALL_CONCERN, "tp_btf", "sched_switch"),
    ]
    specs += [
        ProgramSpec("copy_filemap_read", "cpu_copy", "fentry", "filemap_read"),
        ProgramSpec("copy_generic_perform_write", "cpu_copy", "fentry", "generic_perform_write"),
        ProgramSpec("gup_fast_enter", "gup", "fentry", "gup_fast_fallback"),
        ProgramSpec("gup_fast_exit", "gup", "fentry", "gup_fast_fallback"),
        ProgramSpec("gup_slow_exit", "gup", "fentry", "__get_user_pages"),
        ProgramSpec("pagecache_add", "page_cache", "tracepoint", "filemap:mm_filemap_add_to_page_cache"),
        ProgramSpec("pagecache_delete", "page_cache", "tracepoint", "filemap:mm_filemap_delete_from_page_cache"),
        ProgramSpec("follow_fork", "children", "tracepoint", "sched:sched_process_fork"),
    ]
    specs += [ProgramSpec(f"lifecycle_{name}", "lifecycle", "tracepoint", f"dma_buf:{name}")
              for name in LIFECYCLE_TRACEPOINTS]
    # Patched kernels only (kernel/patches): the exporter rw_file path behind DMA_BUF_IOCTL_RW_FILE.
    specs += [ProgramSpec(f"rw_file_{phase}", "rw_file", "fentry", "dma_buf_rw_file") for phase in ("enter", "exit")]
    specs += [
        ProgramSpec("lifecycle_fexit_export", "lifecycle", "fentry", "dma_buf_export",
                    primary="lifecycle_dma_buf_export"),
        ProgramSpec("lifecycle_fentry_release", "lifecycle", "fentry", "dma_buf_file_release"),
    ]
    return specs


@dataclass
class HookStatus:
    program: str
    concern: str
    target: str
    live: bool
    via: Optional[str]
    reason: str

    def to_dict(self):
        return dict(self.__dict__)


def _plan(spec, report, tracefs):
    """(load it?, via, reason) for one program, from the feature report."""
    if spec.attach == "tracepoint":
        if feature_detection.tracepoint_exists(tracefs, spec.target):
            return True, "tracepoint", "present"
        return False, None, "tracepoint absent on this kernel"
    if spec.attach in ("tp_btf", "raw_tp"):
        feature = report.features.get("tp_btf" if spec.attach == "tp_btf" else "raw_tracepoint")
        if feature is not None and feature.available:
            return True, spec.attach, feature.detail
        return False, None, f"{spec.attach} not available" + (f" ({feature.detail})" if feature else "")
    feature = report.features.get(f"fn/{spec.target}")
    if feature is None:  # not in the HOOKS catalogue: try it if fentry works at all
        if report.available("fentry"):
            return True, "fentry", "not trialled by doctor; tried at load"
        return False, None, f"fentry refused ({report.features['fentry'].detail})" if "fentry" in report.features \
            else "fentry not available"
    if feature.available and feature.via == "fentry":
        return True, "fentry", feature.detail
    if feature.available:
        return False, None, f"only {feature.via} works here and dmabuf-top has no {feature.via} variant yet: {feature.detail}"
    return False, None, feature.detail


def _syscall_hooks(statuses):
    """The syscall program pair, reported as a pair of hooks per syscall: enter_read, exit_read..."""
    hooks = []
    for phase in ("enter", "exit"):
        primary, fallback = statuses[f"syscall_{phase}_btf"], statuses[f"syscall_{phase}_raw"]
        used = primary if primary.live else fallback if fallback.live else None
        reason = used.reason if used else f"{primary.reason}; raw_tp: {fallback.reason}"
        for syscall, path in SYSCALLS.items():
            hooks.append(HookStatus(f"{phase}_{syscall}", path, f"raw_syscalls:sys_{phase} ({syscall})",
                                    used is not None, used.via if used else None, reason))
    return hooks


def _absent_from_kernel(report, function):
    """The function is in neither BTF nor kallsyms (features.detect said so): nothing there to trace."""
    feature = report.features.get(f"fn/{function}")
    return feature is not None and not feature.available and feature.detail.startswith("absent")


class Tracer:
    """Loads iopaths.bpf.o with the hooks this kernel allows and attaches them.

    pid: trace one process (tgid) only; with follow_children, also every process it
    forks from now on (a sched_process_fork program fills a tgid set). ignore_self: leave the tracer's own
    syscalls out (set False to trace work done in this very process, as tests do).
    report: a FeatureReport to reuse (else detected now). record: per-event ring buffer.
    """

    def __init__(self, pid=None, record=False, stacks=True, report=None, ignore_self=True, follow_children=False,
                 max_entries=None):
        feature_detection.require_bpf_privileges("I/O path tracing")
        self._max_entries = dict(max_entries or {})  # {map name: entries}: other sizes than the object's (tests)
        self.report = report or feature_detection.detect()
        self.record = record
        self.hooks: List[HookStatus] = []
        self._obj = None
        self._ring = None
        self._records = []
        self._kallsyms = None
        self._target_keys, self._decoded_targets = {}, {}
        tracefs = feature_detection.tracefs_root()
        specs = program_specs()
        self._plans = {spec.program: _plan(spec, self.report, tracefs) for spec in specs}
        statuses = {}
        for spec in specs:
            load, via, reason = self._plans[spec.program]
            if spec.primary and self._plans[spec.primary][0]:
                load, via, reason = False, None, f"not needed: {spec.primary} is used"
            if spec.concern == "children" and not (pid and follow_children):
                load, via, reason = False, None, "not needed: no process to follow"
            if spec.concern == "rw_file" and _absent_from_kernel(self.report, spec.target):
                load, via, reason = False, None, "not needed: this kernel has no such path (unpatched)"
            statuses[spec.program] = HookStatus(spec.program, spec.concern, spec.target, load, via, reason)
        self._rodata_values = dict(target_tgid=pid or 0, ignore_tgid=os.getpid() if ignore_self else 0,
                                   record_events=record, collect_stacks=stacks,
                                   follow_children=bool(pid and follow_children))
        try:
            self._load_and_attach(specs, statuses)
            if record:
                self._ring = RingBuffer(self._obj.map("records"), self._on_record)
        except BaseException:
            self.close()
            raise
        self.programs = statuses
        self.hooks = _syscall_hooks(statuses) + [s for s in statuses.values() if s.concern != SYSCALL_CONCERN]

    def _load_and_attach(self, specs, statuses):
        # A program the verifier or the kernel refuses is dropped with its reason, and its fallback
        # (if any) takes its place in a fresh load; the rest still load.
        for _ in range(2 * len(statuses) + 1):
            self._obj = BpfObject(object_path("iopaths"))
            self._rodata_values["batch_calls"] = statuses[BATCH_FLUSH_PROGRAM].live
            self._obj.set_rodata(**self._rodata_values)
            for name, entries in self._max_entries.items():
                self._obj.map(name).max_entries = entries
            for name, status in statuses.items():
                self._obj.program(name).autoload = status.live
            try:
                self._obj.load()
            except BpfLoadError as error:
                if error.program not in statuses or not statuses[error.program].live:
                    raise
                self._refused(specs, statuses, error.program, f"load refused: {error}")
                self._obj.close()
                continue
            failed = self._attach(specs, statuses)
            if not failed:
                return
            self._obj.close()  # a fallback replaces a program whose attach failed: load again with it
        raise BpfError("iopaths: no set of programs could be loaded")

    def _refused(self, specs, statuses, program, reason):
        """Mark a program refused; enable its fallback if it has one. True when a fallback was enabled."""
        failed = statuses[program]
        failed.live, failed.via, failed.reason = False, None, reason
        for spec in specs:
            if spec.primary == program and self._plans[spec.program][0]:
                statuses[spec.program] = HookStatus(spec.program, spec.concern, spec.target, True,
                                                    *self._plans[spec.program][1:])
                return True
        return False

    def _attach(self, specs, statuses):
        """Attach every loaded program; True when a refused one has a fallback to load instead."""
        reload = False
        for spec in specs:
            status = statuses[spec.program]
            if not status.live:
                continue
            try:
                self._obj.program(spec.program).attach()
            except BpfAttachError as error:
                reload |= self._refused(specs, statuses, spec.program, f"attach refused: {error}")
        return reload

    def detach(self):
        """Take every program off its hook, keeping them loaded and the counters as they are."""
        self._obj.detach_all()

    def reattach(self):
        """Put the live programs back on their hooks after detach()."""
        for name, status in self.programs.items():
            if status.live:
                self._obj.program(name).attach()

    # -- reading

    def snapshot(self, minimal=False):
        """Cumulative counters now. minimal: only what a delta reader of targets, tasks and stacks
        needs (record): page cache and lifecycle are left empty, as reading every entry
        of maps it does not use costs seconds per poll on a slow machine under churn."""
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
            lifecycle = dict(iopaths.decode_lifecycle(k, v) for k, v in maps["lifecycle_counts"].items())
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
        full = self._obj.map("map_full")
        counts = {}
        for index, name in enumerate(iopaths.COUNTED_MAPS):
            raw = full.lookup(index.to_bytes(4, "little"))
            counts[name] = sum(int.from_bytes(v, "little") for v in full.split_percpu(raw)) if raw else 0
        return counts

    def dropped(self):
        """Ring buffer records lost because the buffer was full (0 when not recording)."""
        dropped = self._obj.map("dropped")
        raw = dropped.lookup(bytes(4))
        return sum(int.from_bytes(v, "little") for v in dropped.split_percpu(raw)) if raw else 0

    def stack_ips(self, stack_id):
        raw = self._obj.map("stack_traces").lookup(stack_id.to_bytes(4, "little", signed=True)) if stack_id >= 0 else None
        return iopaths.decode_stack_ips(raw) if raw else []

    def symbolized_stacks(self, snapshot, kallsyms=None):
        """[(point, path, [frames innermost first], hits, amount)] for the snapshot's stacks."""
        kallsyms = kallsyms or self.kallsyms()
        out = []
        for (stack_id, point, path), (hits, amount) in snapshot.stacks.items():
            frames = [kallsyms.name(ip) for ip in self.stack_ips(stack_id)] or [f"[stack lost: {stack_id}]"]
            out.append((point, path, frames, hits, amount))
        return out

    def kallsyms(self):
        if self._kallsyms is None:
            self._kallsyms = Kallsyms.from_file()
        return self._kallsyms

    def _on_record(self, raw):
        self._records.append(iopaths.decode_record(raw))

    def poll_records(self, timeout_ms=100, max_records=None):
        """Records seen since the last call (needs record=True), at most max_records."""
        if self._ring is None:
            raise BpfError("per-event records need Tracer(record=True)")
        self._ring.poll(timeout_ms, limit=max_records)
        records, self._records = self._records, []
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
        """The most records the ring buffer can hold at once (all of the smallest kind)."""
        smallest = min(ctypes.sizeof(iopaths.IoRecordC), ctypes.sizeof(iopaths.LifecycleRecordC))
        return self._obj.map("records").max_entries // ((RINGBUF_HEADER + smallest + 7) // 8 * 8)  # 8-aligned slots

    def close(self):
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _sum_cpus(bpf_map, raw, decode):
    """A per-CPU map value: decode each CPU's copy and add them up."""
    values = [decode(part) for part in bpf_map.split_percpu(raw)]
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


@dataclass
class TraceSnapshot:
    by_target: Dict[iopaths.Target, Counters]
    by_task: Dict[Tuple[int, str], Counters]
    outcomes: Dict[iopaths.Outcome, dict]
    pagecache: Dict[Tuple[int, int], Tuple[int, int]]  # (inode, st_dev) -> (pages added, removed)
    lifecycle: Dict[Tuple[int, str], Tuple[int, int]]  # (dma-buf inode, event) -> (count, size)
    stacks: Dict[Tuple[int, str, str], Tuple[int, int]]  # (stack id, point, path) -> (hits, amount)
    dropped: int
    hooks: List[HookStatus] = field(default_factory=list)
    map_full: Dict[str, int] = field(default_factory=dict)  # map name -> new keys refused (Tracer.map_full)

    def per_path(self, tgid=None):
        """{path: Counters} summed over processes (or for one)."""
        totals = {}
        for (task, path), counters in self.by_task.items():
            if tgid is None or task == tgid:
                totals[path] = totals.get(path, Counters()) + counters
        return totals

    def missing_concerns(self):
        return missing_concerns(self.hooks)

    def untraced_fields(self):
        missing = missing_concerns(self.hooks)
        return {name for name, concern in COLUMN_CONCERNS.items() if concern in missing}

    def to_dict(self, buffers=None):
        untraced = self.untraced_fields()
        out = {
            "paths": {path: c.to_dict(untraced) for path, c in sorted(self.per_path().items())},
            "processes": [{"tgid": tgid, "path": path, **c.to_dict(untraced)}
                          for (tgid, path), c in sorted(self.by_task.items())],
            "targets": [{"inode": t.inode, "dev": t.dev, "path": t.path, "kind": t.kind, "direct": t.direct,
                         **c.to_dict(untraced)} for t, c in self.by_target.items()],
            "outcomes": [{**o.__dict__, **v} for o, v in self.outcomes.items()],
            "page_cache": [{"inode": i, "dev": d, "added": a, "removed": r}
                           for (i, d), (a, r) in sorted(self.pagecache.items())],
            "lifecycle": [{"inode": i, "event": e, "count": c, "size": s}
                          for (i, e), (c, s) in sorted(self.lifecycle.items())],
            "dropped_events": self.dropped,
            "map_full": dict(self.map_full),
            "hooks": [h.to_dict() for h in self.hooks],
            "missing": missing_concerns(self.hooks),
        }
        if buffers is not None:
            out["buffers"] = {str(inode): {path: c.to_dict(untraced) for path, c in paths.items()}
                              for inode, paths in per_buffer(self, buffers).items()}
        return out


# Targets whose objects can be gone for good (a dma-buf freed, a memfd closed): their counters can be
# forgotten. Files on disk stay, and a reader cannot tell an idle file from a deleted one.
FORGETTABLE_KINDS = ("dmabuf", "shmem")
# The maps snapshot(minimal=True) reads (targets, tasks, stacks) and the tgid set behind them: a key one of
# them refused is I/O missing from what such a reader shows. The others (page cache per file,
# lifecycle) it never reads, so what they refuse loses nothing it shows.
MINIMAL_MAPS = ("io_by_target", "io_by_task", "stack_counts", "traced_tgids")


def gone_targets(by_target, previous_by_target, alive):
    """The targets of a snapshot whose counters a delta reader may forget (Tracer.forget): a dma-buf or
    shmem object that did nothing since the previous snapshot (its last delta is taken) and that the
    reader's latest buffer read no longer shows (alive(kind, inode, dev) is False). If it moves again,
    its key comes back from zero and the next delta counts it as new: nothing counted twice or lost."""
    return [target for target, counters in by_target.items()
            if target.kind in FORGETTABLE_KINDS and previous_by_target.get(target) == counters
            and not alive(target.kind, target.inode, target.dev)]


def forget_gone(tracer, snapshot, previous_by_target, alive):
    """Forget the gone targets (gone_targets) in the kernel and in `snapshot`, so that the snapshot is
    the next call's `previous_by_target`. Under churn the maps would otherwise fill with buffers that
    are gone and refuse new ones. Returns the targets forgotten."""
    gone = gone_targets(snapshot.by_target, previous_by_target, alive)
    if gone:
        tracer.forget(targets=gone)
        for target in gone:
            del snapshot.by_target[target]
    return gone


def missing_concerns(hooks):
    """{concern: reason} for every concern with a hook not live: what is NOT counted, as opposed to zero."""
    missing = {}
    for hook in hooks:
        if not hook.live and not hook.reason.startswith("not needed"):
            missing.setdefault(hook.concern, f"{hook.target}: {hook.reason}")
    return missing


def per_buffer(snapshot, buffers):
    """{dma-buf inode: {path: Counters}}: a dma-buf mapping directly, a udmabuf through its memfd."""
    return per_buffer_of(snapshot, {b.inode for b in buffers},
                         {(b.backing_inode, b.backing_dev): b.inode for b in buffers if b.backing_inode})


def per_buffer_of(snapshot, dmabuf_inodes, by_memfd):
    """per_buffer for callers holding buffers as columns: `dmabuf_inodes` any container of inodes,
    `by_memfd` {(memfd inode, st_dev): udmabuf inode}."""
    out = {}
    for target, counters in snapshot.by_target.items():
        if target.kind == "dmabuf" and target.inode in dmabuf_inodes:
            inode = target.inode
        elif target.kind == "shmem" and (target.inode, target.dev) in by_memfd:
            inode = by_memfd[(target.inode, target.dev)]
        else:
            continue
        paths = out.setdefault(inode, {})
        paths[target.path] = paths.get(target.path, Counters()) + counters
    return out


def copy_helper_note(report):
    """Why CPU copies are measured where they are: the helpers' own attachability on this kernel."""
    notes = []
    for name in COPY_HELPERS:
        feature = report.features.get(f"fn/{name}")
        if feature is not None:
            notes.append(f"{name}: {'attachable via ' + feature.via if feature.available else feature.detail}")
    return ("CPU copies are read from the return values of filemap_read (page cache -> user) and "
            "generic_perform_write (user -> page cache), around the iov_iter helpers; "
            + ("; ".join(notes) if notes else "the helpers were not trialled"))


# ---------------------------------------------------------------------------
# Kernel symbols and folded stacks


class Kallsyms:
    """Address -> "function+0xoff" from /proc/kallsyms (needs root for real addresses)."""

    def __init__(self, entries):
        self._entries = sorted(entries)
        self._addresses = [address for address, _ in self._entries]

    @classmethod
    def from_file(cls, path="/proc/kallsyms"):
        entries = []
        with open(path) as kallsyms:
            for line in kallsyms:
                parts = line.split()
                if len(parts) >= 3 and parts[1] in "tTwW":
                    entries.append((int(parts[0], 16), parts[2]))
        return cls(entries)

    def name(self, address):
        index = bisect.bisect_right(self._addresses, address) - 1
        if index < 0 or not self._entries[index][0]:
            return f"0x{address:x}"
        base, name = self._entries[index]
        return name


def folded(symbolized, weight="amount"):
    """Folded stacks ("path;point;outer;...;inner weight"), the input of flamegraph.pl and speedscope."""
    lines = {}
    for point, path, frames, hits, amount in symbolized:
        key = ";".join([path, point] + list(reversed(frames)))
        lines[key] = lines.get(key, 0) + (amount if weight == "amount" else hits)
    return [f"{key} {value}" for key, value in sorted(lines.items())]


def log2_histogram_rows(hist):
    """[(low_us, high_us, count)] for the non-empty log2 slots of a latency histogram."""
    rows = []
    for slot, count in enumerate(hist):
        if count:
            low = 0 if slot == 0 else 1 << slot
            rows.append((low, (1 << (slot + 1)) - 1, count))
    return rows


# ---------------------------------------------------------------------------
# Rendering (pure: tested without a kernel)

COLUMNS = ("calls", "errors", "bytes", "cpu_copied", "pinned_pages", "got_pages", "pc_added", "pc_removed")
# The concern whose hooks fill a column: when it is missing the cell says so instead of 0.
COLUMN_CONCERNS = {"cpu_copied": "cpu_copy", "pinned_pages": "gup", "got_pages": "gup", "gup_calls": "gup",
                   "pc_added": "page_cache",
                   "pc_removed": "page_cache"}
NOT_TRACED = "n/t"


def render_text(per_path, missing, dropped, elapsed_s=None, map_full=None):
    """Per-path totals as a table, then what is not traced and why, then the dropped-event count
    and, for each full map, how many new keys it refused (what they carried is not in the table)."""
    from .text import human_size

    header = f"{'path':<16}" + "".join(f"{name:>13}" for name in COLUMNS) + f"{'avg lat':>11}"
    lines = [header]
    for path, counters in sorted(per_path.items()):
        cells = []
        for name in COLUMNS:
            value = getattr(counters, name)
            if COLUMN_CONCERNS.get(name) in missing:
                cells.append(NOT_TRACED)
            else:
                cells.append(human_size(value) if name in ("bytes", "cpu_copied") else str(value))
        average = f"{counters.latency_ns / counters.calls / 1000:.1f}us" if counters.calls else "-"
        lines.append(f"{path:<16}" + "".join(f"{cell:>13}" for cell in cells) + f"{average:>11}")
    if len(lines) == 1:
        lines.append("(no traced I/O)")
    if elapsed_s:
        lines.append(f"over {elapsed_s:.2f} s")
    for concern, reason in sorted(missing.items()):
        lines.append(f"{NOT_TRACED} = not traced: {concern}: {reason}")
    lines.append(f"dropped events: {dropped}")
    lines += map_full_lines(map_full or {})
    return "\n".join(lines)


def map_full_lines(map_full):
    """One line per map that refused new keys: the numbers are low bounds of what went uncounted."""
    return [f"map full: {name} refused {count} new keys (what they would have counted is missing from it)"
            for name, count in sorted(map_full.items()) if count]
