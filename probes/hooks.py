"""Every kernel hook point dmabuf-top knows, and the state a hook can be in: the one list.

`dmabuf-top doctor` (dmabuf_top.features.detect) trials the functions and tracepoints of every
HookPoint; the Tracer (probes/tracer.py) plans its BPF programs from the points' `programs`. A point
with no programs is one doctor watches and the tracer has no program for yet (direct I/O, splice).

A hook's state is a HookState: LIVE, MISSING (wanted, not attached: what it counts is not traced, and
shown as such, never as 0) or NOT_NEEDED (a fallback whose primary is live, a path this kernel does
not have, a child-following hook with no process to follow). Nothing parses sentences to tell them apart.
"""
import enum
from dataclasses import dataclass
from typing import Optional, Tuple

from ..kernelfs import tracepoint_exists

# Attach kinds, best first where a point has several (DESIGN.md, "pick the best hook the kernel offers").
TP_BTF, RAW_TP, FENTRY, KPROBE, TRACEPOINT = "tp_btf", "raw_tp", "fentry", "kprobe", "tracepoint"
ITER = "iter"  # a BPF iterator the Tracer runs itself once its hooks are attached (not an attach point)

# The 7.0+ dma_buf tracepoints (drivers/dma-buf/dma-buf-trace.h).
DMA_BUF_TRACEPOINTS = ("dma_buf_export", "dma_buf_fd", "dma_buf_get", "dma_buf_put", "dma_buf_mmap",
                       "dma_buf_mmap_internal", "dma_buf_dynamic_attach", "dma_buf_detach")

# The syscalls that open an attribution record, and the path each belongs to. One program on the
# raw sys_enter/sys_exit tracepoints handles them all (iopaths.bpf.c tells them by number); each is
# still reported as its own pair of hooks (enter_read, exit_read...), so "is read traced?" has an answer.
SYSCALLS = {
    "read": "read", "pread64": "read", "readv": "read", "preadv": "read", "preadv2": "read",
    "write": "write", "pwrite64": "write", "writev": "write", "pwritev": "write", "pwritev2": "write",
    "copy_file_range": "copy_file_range", "sendfile64": "sendfile", "splice": "splice",
}
SYSCALL_CONCERN = "syscalls"

# Where fentry/fexit are allowed, the VFS functions these syscalls reach (the prefix of their program pair in
# iopaths.bpf.c: vfs_read_enter/vfs_read_exit...). Then a syscall that moves no data passes through no program.
VFS_PATH = "vfs"  # the group: all of its programs live, or none (then the syscall tracepoints are used)
SYSCALL_VFS_PROGRAMS = {
    "read": "vfs_read", "pread64": "vfs_read", "readv": "vfs_readv", "preadv": "vfs_readv", "preadv2": "vfs_readv",
    "write": "vfs_write", "pwrite64": "vfs_write", "writev": "vfs_writev", "pwritev": "vfs_writev",
    "pwritev2": "vfs_writev", "copy_file_range": "vfs_copy_file_range", "sendfile64": "sendfile", "splice": "splice",
}
VFS_FUNCTIONS = {"vfs_read": "vfs_read", "vfs_write": "vfs_write", "vfs_readv": "vfs_readv",
                 "vfs_writev": "vfs_writev", "vfs_copy_file_range": "vfs_copy_file_range",
                 "sendfile": "do_sendfile", "splice": "do_splice"}  # program prefix -> kernel function
# The programs that keep which processes map shared memory (iopaths.bpf.c, shared_memory_tgids) for either path:
# live together or not at all; without them every read and write takes the exact path (nothing is lost).
SHARED_MEMORY = "shared_memory"
# Flushes a thread's run of same-keyed calls when it is switched out; without it every call
# updates the maps itself (iopaths.bpf.c, struct call_batch).
BATCH_FLUSH_PROGRAM = "flush_on_switch"


@dataclass(frozen=True)
class Program:
    """One BPF program of the Tracer's objects and where it attaches."""

    name: str
    attach: str  # TRACEPOINT, TP_BTF, RAW_TP or FENTRY (fentry/fexit: the program's section says which)
    # "category:event" (a tracepoint; for TP_BTF, one that only kernels with it in tracefs have), a raw
    # tracepoint, or a kernel function
    target: str
    fallback_for: str = ""  # a fallback: loaded only when this program is not live
    also_replaces: Tuple[str, ...] = ()  # further programs a live fallback makes not needed (it does their work too)
    group: str = ""  # programs that are live together or not at all (VFS_PATH, SHARED_MEMORY)
    # No BPF program of its own: its work is done inside these (any one live), switched on by .rodata
    # (the AIO syscall fallback inside the syscall programs, so that no second program runs on every syscall).
    within: Tuple[str, ...] = ()
    object: str = "iopaths"  # the probes/<object>.bpf.o it is in

    def lacks_tracepoint(self, tracefs) -> bool:
        """Its target names a tracepoint ("category:event") that this kernel's tracefs does not have: then it is
        not planned, whatever its attach kind (the dma_buf:* events came in 7.0; a tp_btf program on one fails
        to load where it is missing)."""
        return ":" in self.target and not tracepoint_exists(tracefs, self.target)


@dataclass(frozen=True)
class HookPoint:
    """One kernel path dmabuf-top hooks: what it counts, where it can attach (best first), what is loaded there."""

    name: str  # doctor's name for it
    concern: str  # what its programs count (TraceSnapshot's COLUMN_CONCERNS, an I/O path, "lifecycle"...)
    purpose: str
    attach: Tuple[str, ...]  # the attach kinds it can use, best first
    functions: Tuple[str, ...] = ()  # kernel functions doctor trials (fentry/fexit, else kprobe/kretprobe)
    tracepoints: Tuple[str, ...] = ()  # "category:event"
    programs: Tuple[Program, ...] = ()  # what the Tracer loads; empty: watched by doctor only
    patched_only: bool = False  # exists only on kernels carrying an out-of-tree patch (kernel/series/rw-file)
    config: str = ""  # the kernel option that builds this path: a kernel without its hook points has no such path


LIFECYCLE_OBJECT = "buffer_lifecycle"


def _lifecycle_programs():
    programs = tuple(Program(f"lifecycle_{name}", TRACEPOINT, f"dma_buf:{name}", object=LIFECYCLE_OBJECT)
                     for name in DMA_BUF_TRACEPOINTS)
    return programs + (Program("lifecycle_fexit_export", FENTRY, "dma_buf_export",
                               fallback_for="lifecycle_dma_buf_export", object=LIFECYCLE_OBJECT),
                       Program("lifecycle_fexit_get", FENTRY, "dma_buf_get", fallback_for="lifecycle_dma_buf_get",
                               object=LIFECYCLE_OBJECT),
                       Program("lifecycle_fentry_put", FENTRY, "dma_buf_put", fallback_for="lifecycle_dma_buf_put",
                               object=LIFECYCLE_OBJECT),
                       Program("lifecycle_fentry_release", FENTRY, "dma_buf_file_release", object=LIFECYCLE_OBJECT),
                       # No tracepoint and a static (inlined) setter: the ioctl's exit reads the name it left.
                       Program("lifecycle_fexit_set_name", FENTRY, "dma_buf_ioctl", object=LIFECYCLE_OBJECT),
                       # which memfd a udmabuf was made over, at export: its I/O is the udmabuf's even when it is
                       # freed before the iterator's next read. The export tracepoint's raw argument is the buffer
                       # (the plain tracepoint's record has no pointer to it); else at dma_buf_export's return.
                       Program("lifecycle_udmabuf_backing_btf", TP_BTF, "dma_buf:dma_buf_export",
                               object=LIFECYCLE_OBJECT),
                       Program("lifecycle_udmabuf_backing", FENTRY, "dma_buf_export",
                               fallback_for="lifecycle_udmabuf_backing_btf", object=LIFECYCLE_OBJECT))


def _vfs_programs():
    pairs = tuple(Program(f"{prefix}_{phase}", FENTRY, function, group=VFS_PATH)
                  for prefix, function in VFS_FUNCTIONS.items() for phase in ("enter", "exit"))
    # Which processes map a dma-buf, shmem or device memory (iopaths.bpf.c, shared_memory_tgids): a read of
    # an ordinary file into anonymous memory of any other process leaves after a few loads.
    # On the syscall path the exits of mmap and shmat set the bit instead of mmap_region.
    return pairs + (Program("shared_memory_mmap", FENTRY, "mmap_region", group=VFS_PATH),
                    Program("shared_memory_fork", TP_BTF, "sched_process_fork", group=SHARED_MEMORY),
                    Program("shared_memory_exec", TP_BTF, "sched_process_exec", group=SHARED_MEMORY),
                    # The processes holding an fd of shared memory before the tracer started (fd_holder_tgids: the
                    # syscall path's fast exit for reads and writes of every other process; idle on the VFS path).
                    # Before shared_memory_seed: a tracer tracing itself (tests) reads this one before its own
                    # mapping bit is set, so that read is not counted.
                    Program("fd_holder_seed", ITER, "task_file", group=SHARED_MEMORY),
                    Program("shared_memory_seed", ITER, "task_vma", group=SHARED_MEMORY))


# The syscall tracepoints take over when the VFS path is refused (the CI host: fentry EPERM).
SYSCALL_FALLBACK_FOR = "vfs_read_enter"

HOOK_POINTS = (
    # Where fentry is allowed: the VFS functions, so that syscalls moving no data pass through no program
    # (benchmarks/overhead.py --exact: getppid +0 % instead of +100 % with the syscall tracepoints).
    HookPoint("vfs", SYSCALL_CONCERN, "read, write and their v variants, copy_file_range, sendfile and splice at "
              "the VFS level, with the processes that map shared memory: who, which file, which buffer, bytes, "
              "errors, latency", (FENTRY, TP_BTF, ITER), functions=tuple(VFS_FUNCTIONS.values()) + ("mmap_region",),
              tracepoints=("sched:sched_process_fork", "sched:sched_process_exec"), programs=_vfs_programs()),
    # Else one program on each raw syscall tracepoint (tp_btf: plain loads of the registers, else raw_tp) tells the
    # traced syscalls apart by number: half the cost of the per-syscall perf events (benchmarks/overhead.py).
    HookPoint("syscalls", SYSCALL_CONCERN, "read, write and their p/v variants, copy_file_range, sendfile and "
              "splice: who, which file, which buffer, bytes, errors, latency", (TP_BTF, RAW_TP),
              tracepoints=("raw_syscalls:sys_enter", "raw_syscalls:sys_exit"),
              programs=(Program("syscall_enter_btf", TP_BTF, "sys_enter", fallback_for=SYSCALL_FALLBACK_FOR),
                        Program("syscall_exit_btf", TP_BTF, "sys_exit", fallback_for=SYSCALL_FALLBACK_FOR),
                        Program("syscall_enter_raw", RAW_TP, "sys_enter", fallback_for="syscall_enter_btf"),
                        Program("syscall_exit_raw", RAW_TP, "sys_exit", fallback_for="syscall_exit_btf"),
                        Program(BATCH_FLUSH_PROGRAM, TP_BTF, "sched_switch", fallback_for=SYSCALL_FALLBACK_FOR))),
    # Asynchronous requests: attributed at issue to the issuing process and the memory at the buffer address,
    # credited at completion (iopaths.bpf.c, "io_uring and AIO requests"). io_uring's tracepoints exist wherever
    # io_uring is built (the CI host has tp_btf and no fentry).
    HookPoint("io_uring", "io_uring", "io_uring read/write requests (READ, READV, READ_FIXED, READV_FIXED and "
              "their WRITE twins): who, which file, which buffer, bytes at completion", (TP_BTF, RAW_TP),
              tracepoints=("io_uring:io_uring_submit_req", "io_uring:io_uring_complete"),
              programs=(Program("uring_submit_btf", TP_BTF, "io_uring_submit_req"),
                        Program("uring_complete_btf", TP_BTF, "io_uring_complete"),
                        Program("uring_submit_raw", RAW_TP, "io_uring_submit_req", fallback_for="uring_submit_btf"),
                        Program("uring_complete_raw", RAW_TP, "io_uring_complete",
                                fallback_for="uring_complete_btf")), config="CONFIG_IO_URING"),
    # AIO has no tracepoints: fentry on the request path, else io_submit's iocbs and io_getevents' events read by
    # the syscall programs (`within`: where fentry is refused, the syscall tracepoints are the path anyway).
    HookPoint("aio", "aio", "AIO requests (IOCB_CMD_PREAD, PWRITE, PREADV, PWRITEV): who, which file, which "
              "buffer, bytes at completion", (FENTRY, TP_BTF), functions=("aio_read", "aio_write", "aio_complete_rw"),
              programs=(Program("aio_read_enter", FENTRY, "aio_read"), Program("aio_read_exit", FENTRY, "aio_read"),
                        Program("aio_write_enter", FENTRY, "aio_write"),
                        Program("aio_write_exit", FENTRY, "aio_write"),
                        Program("aio_complete", FENTRY, "aio_complete_rw"),
                        Program("aio_submit_sys", TP_BTF, "sys_enter", fallback_for="aio_read_enter",
                                also_replaces=("aio_read_exit", "aio_write_enter", "aio_write_exit"),
                                within=("syscall_enter_btf", "syscall_enter_raw")),
                        Program("aio_events_sys", TP_BTF, "sys_exit", fallback_for="aio_complete",
                                within=("syscall_exit_btf", "syscall_exit_raw"))),
              config="CONFIG_AIO"),
    HookPoint("copy_file_range", "copy_file_range", "bytes moved by copy_file_range", (FENTRY, KPROBE),
              functions=("vfs_copy_file_range",)),
    HookPoint("exporter_rw_file", "rw_file", "an exporter's direct file I/O callback (patched kernels)",
              (FENTRY, KPROBE), functions=("dma_buf_rw_file", "system_heap_rw_file", "udmabuf_rw_file"),
              programs=(Program("rw_file_enter", FENTRY, "dma_buf_rw_file"),
                        Program("rw_file_exit", FENTRY, "dma_buf_rw_file")),
              patched_only=True),
    HookPoint("direct_io", "direct_io", "O_DIRECT through iomap", (FENTRY, KPROBE, TRACEPOINT),
              functions=("__iomap_dio_rw", "iomap_dio_rw"),
              tracepoints=("iomap:iomap_dio_rw_begin", "iomap:iomap_dio_complete")),
    HookPoint("gup", "gup", "pages pinned or got by GUP", (FENTRY, KPROBE),
              functions=("pin_user_pages_fast", "pin_user_pages", "__get_user_pages", "get_user_pages_fast",
                         "iov_iter_extract_pages", "gup_fast_fallback"),
              programs=(Program("gup_fast_enter", FENTRY, "gup_fast_fallback"),
                        Program("gup_fast_exit", FENTRY, "gup_fast_fallback"),
                        Program("gup_slow_exit", FENTRY, "__get_user_pages"))),
    HookPoint("page_cache", "page_cache", "pages added to and removed from the page cache", (TRACEPOINT,),
              tracepoints=("filemap:mm_filemap_add_to_page_cache", "filemap:mm_filemap_delete_from_page_cache"),
              programs=(Program("pagecache_add", TRACEPOINT, "filemap:mm_filemap_add_to_page_cache"),
                        Program("pagecache_delete", TRACEPOINT, "filemap:mm_filemap_delete_from_page_cache"))),
    HookPoint("cpu_copy", "cpu_copy", "bytes copied by the CPU in the iov_iter helpers", (FENTRY, KPROBE),
              functions=("copy_page_to_iter", "_copy_to_iter", "copy_folio_from_iter_atomic",
                         "copy_page_from_iter_atomic", "_copy_from_iter",
                         # Around the helpers (not ftrace-able on the kernels we met): their return values
                         # are the copies (page cache -> user, user -> page cache).
                         "filemap_read", "generic_perform_write"),
              programs=(Program("copy_filemap_read", FENTRY, "filemap_read"),
                        Program("copy_generic_perform_write", FENTRY, "generic_perform_write"))),
    HookPoint("sendfile_splice", "splice", "sendfile and splice", (FENTRY, KPROBE),
              functions=("do_splice", "do_splice_direct", "splice_file_to_pipe")),
    HookPoint("lifecycle", "lifecycle", "dma-buf creation (with its allocation stacks), naming, attach, mmap and "
              "release", (TRACEPOINT, TP_BTF, FENTRY),
              functions=("dma_buf_export", "dma_buf_file_release", "dma_buf_ioctl", "dma_buf_get", "dma_buf_put"),
              tracepoints=tuple(f"dma_buf:{name}" for name in DMA_BUF_TRACEPOINTS),
              programs=_lifecycle_programs()),
    HookPoint("children", "children", "processes forked by a traced one (record -- CMD follows them)",
              (TRACEPOINT,), tracepoints=("sched:sched_process_fork",),
              programs=(Program("follow_fork", TRACEPOINT, "sched:sched_process_fork"),)),
)


def programs():
    """[(HookPoint, Program)] for every program the Tracer may load, in catalogue order."""
    return [(point, program) for point in HOOK_POINTS for program in point.programs]


class State(str, enum.Enum):  # a str: stored as its value in a session (session.Hook)
    LIVE = "live"
    MISSING = "missing"  # wanted and not attached: its concern is not traced (never shown as 0)
    NOT_NEEDED = "not needed"  # a fallback whose primary is live, or a path this kernel or run does not have


@dataclass(frozen=True)
class HookState:
    """One hook of a tracing run: its program (or per-syscall hook name), what it counts, where, its state,
    how it is attached when live, and why it is in that state."""

    program: str
    concern: str
    target: str
    state: State
    via: Optional[str] = None
    why: str = ""

    @property
    def live(self):
        return self.state is State.LIVE

    @property
    def missing(self):
        return self.state is State.MISSING

    def to_dict(self):
        """JSON: the v1 keys (program, concern, target, live, via, reason) and `state`."""
        return {"program": self.program, "concern": self.concern, "target": self.target, "live": self.live,
                "via": self.via, "reason": self.why, "state": self.state.value}


def missing_concerns(hooks):
    """{concern: "target: why"} for every concern with a MISSING hook: what is NOT counted, as opposed to zero."""
    missing = {}
    for hook in hooks:
        if hook.missing:
            missing.setdefault(hook.concern, f"{hook.target}: {hook.why}")
    return missing
