"""Runs the method matrix: prepares the file, drops the page cache, times and traces each method.

Each method runs in this process, between two snapshots of a Tracer scoped to it
(Tracer(pid=getpid(), ignore_self=False)): only the method's own calls happen between
them, so the counters, the outcomes and the stacks of that window are the method's.
The same window drains the block-layer DMA evidence (validate/evidence.py): what the
device wrote for this process's reads, intersected with the buffer's own page frames,
decides the verdict by byte conservation (verdict.py).
Allocation and close are timed outside the window; the content check reads the buffer
after it.

`trace_command` does the same for a user's command, forked and held until the tracer
is attached, and scoped to the calls whose memory is a dma-buf or a memfd; its DMA
evidence covers its process tree, against the dma-bufs and memfds it held.
"""
import errno as errno_module
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .. import features as feature_detection
from ..errors import DmabufTopError
from ..kernelfs import filesystem_name
from ..probes.iopaths import Counters
from ..recording.session import BufferSnapshot
from ..stacks import kernel_frames
from . import evidence as dma
from . import methods as method_table
from .page_cache import drop_page_cache
from .verdict import MEMORY_KINDS, Flow, Measurement, Verdict, absent, unmeasured_copy_sites, verdict

MiB = 1 << 20
DEFAULT_SIZE = 256 * MiB
DEFAULT_CHUNK = 32 * MiB  # the posters read into 32 MB buffers
DEFAULT_DIR = "/mnt/scratch"
EVIDENCE_STACKS = 3
EVIDENCE_ATTEMPTS = 3
ASYNC_IO_UNSEEN = ("the reads ran as io_uring or AIO requests: the tracer credits their bytes at completion, but a "
                   "copy made inside a request is counted apart from any call, so the device's writes decide")


def default_directory():
    if os.path.isdir(DEFAULT_DIR):
        return DEFAULT_DIR
    raise DmabufTopError(f"{DEFAULT_DIR} does not exist: give --dir DIR, a directory on the filesystem "
                         "your files are loaded from (not tmpfs)", exit_code=2)


def digest(data):
    """The content check's hash (BLAKE2b: fast, and a skipped page or a flipped byte changes it)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


@dataclass(frozen=True)
class SourceFile:
    path: str
    size: int
    digest: str
    filesystem: str




def filesystem_of(path):
    """The superblock magic's name (statfs f_type) of the filesystem holding path."""
    import ctypes

    class Statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

    libc = ctypes.CDLL(None, use_errno=True)
    buf = Statfs()
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return "?"
    magic = buf.f_type & 0xFFFFFFFF
    return filesystem_name(magic)


def prepare_file(directory, size, name="dmabuf-top-validate.bin"):
    """SIZE random bytes in DIRECTORY, written and synced, with their digest."""
    if not os.path.isdir(directory):
        raise DmabufTopError(f"--dir {directory}: no such directory", exit_code=2)
    path = os.path.join(directory, name)
    hasher = hashlib.blake2b(digest_size=32)
    block = 4 * MiB
    try:
        with open(path, "wb") as out:
            written = 0
            while written < size:
                data = os.urandom(min(block, size - written))
                hasher.update(data)
                out.write(data)
                written += len(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as error:
        raise DmabufTopError(f"cannot write the {size}-byte test file in {directory}: {error.strerror}") from None
    return SourceFile(path, size, hasher.hexdigest(), filesystem_of(directory))


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class MethodResult:
    name: str
    summary: str
    buffer: str
    direct: bool
    payload: int
    verdict: Verdict
    alloc_ms: Optional[float] = None
    io_ms: Optional[float] = None
    close_ms: Optional[float] = None
    moved: int = 0
    reached: int = 0
    cpu_copied: Optional[int] = 0  # None: not traced
    page_cache_pages: Optional[int] = 0
    pinned_pages: Optional[int] = 0
    got_pages: Optional[int] = 0
    syscalls: int = 0
    errors: int = 0
    errno: Optional[int] = None
    checksum: Optional[str] = None  # "ok", "mismatch", or None (not checked)
    buffer_inode: int = 0
    device_bytes: Optional[int] = None  # the device wrote for this method's reads (None: no DMA evidence)
    device_to_buffer: Optional[int] = None  # of those, into the buffer's own page frames
    # Bytes of the file still in the page cache when the load began, though dropped (None: warm, not dropped):
    # the device never read them, so they are missing from device_bytes.
    cached_at_start: Optional[int] = None
    evidence_skips: int = 0  # runs of the block-layer probe the kernel skipped in the window (its evidence is cut)
    evidence: List[dict] = field(default_factory=list)
    paths: Dict[str, dict] = field(default_factory=dict)
    flows: List[dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    # CLOCK_MONOTONIC: the allocation began, the I/O began and ended, the buffer was closed (0: did not happen).
    started_ns: int = 0
    io_started_ns: int = 0
    ended_ns: int = 0
    closed_ns: int = 0
    # What the kernel's dma-buf list said of this method's dma-bufs after allocating, after the I/O and after
    # closing (session.BufferSnapshot rows; none for a memfd, which is no dma-buf), and when it was read: a
    # pass that found none of them (after the close) has no row. Not in to_dict: names are bytes.
    snapshots: list = field(default_factory=list)
    inventory_passes: List[int] = field(default_factory=list)

    @property
    def mb_s(self):
        if not self.io_ms or self.verdict.kind in ("failed", "absent"):
            return None
        return self.payload / MiB / (self.io_ms / 1000)

    def to_dict(self):
        out = {key: value for key, value in self.__dict__.items() if key not in ("verdict", "snapshots",
                                                                                     "inventory_passes")}
        out["verdict"] = self.verdict.to_dict()
        out["errno_name"] = errno_module.errorcode.get(self.errno) if self.errno else None
        out["mb_s"] = self.mb_s
        return out


@dataclass
class ValidateRun:
    results: List[MethodResult]
    source: Optional[SourceFile]
    warm: bool
    hooks: list  # probes.hooks.HookState
    missing: Dict[str, str]
    stacks: Dict[int, List[str]] = field(default_factory=dict)  # evidence stack id -> frames
    command: Optional[List[str]] = None
    command_exit: Optional[int] = None
    kernel: Optional[dict] = None  # FeatureReport.kernel: release, version, machine

    def to_dict(self):
        return {
            "kernel": self.kernel,
            "file": None if self.source is None else {"path": self.source.path, "size": self.source.size,
                                                      "filesystem": self.source.filesystem},
            "page_cache": "warm" if self.warm else "dropped before each method",
            "command": self.command, "command_exit": self.command_exit,
            "missing": self.missing,
            "hooks": [hook.to_dict() for hook in self.hooks],
            "methods": [result.to_dict() for result in self.results],
        }


# ---------------------------------------------------------------------------------------------
# The window between two snapshots


def _flows(before, after):
    flows = []
    for outcome, value in after.outcomes.items():
        previous = before.outcomes.get(outcome, {"calls": 0, "bytes": 0})
        calls = value["calls"] - previous["calls"]
        if calls:
            flows.append(Flow(outcome.path, outcome.src_kind, outcome.dst_kind, outcome.src_fs, outcome.dst_fs,
                              value["bytes"] - previous["bytes"], calls, outcome.error))
    return flows


def _path_deltas(before, after, tgid):
    """{path: what this process did on it between the snapshots}, paths with no activity left out."""
    start = before.per_path(tgid)
    deltas = {path: c - start.get(path, Counters()) for path, c in after.per_path(tgid).items()}
    return {path: d for path, d in deltas.items() if d.calls or d.cpu_copied or d.pc_added or d.pinned_pages}


def _target_deltas(before, after, kinds):
    total = Counters()
    for target, counters in after.by_target.items():
        if target.kind in kinds:
            total = total + (counters - before.by_target.get(target, Counters()))
    return total


def _evidence(tracer, before, after, stack_table, kallsyms):
    """The top stacks (by bytes copied or pages pinned) seen in the window, each with its frames."""
    rows = []
    for key, (hits, amount) in after.stacks.items():
        old_hits, old_amount = before.stacks.get(key, (0, 0))
        if hits - old_hits and amount - old_amount:
            rows.append((key, hits - old_hits, amount - old_amount))
    rows.sort(key=lambda row: -row[2])
    out = []
    for (stack_id, point, path), hits, amount in rows[:EVIDENCE_STACKS]:
        if stack_id not in stack_table:
            hooked = {hook.program: hook.target for hook in tracer.hooks}
            frames = (kernel_frames([kallsyms.name(ip) for ip in tracer.stack_ips(stack_id)], hooked)
                      or [f"[stack lost: {stack_id}]"])
            stack_table[stack_id] = frames
        out.append({"stack_id": stack_id, "point": point, "path": path, "hits": hits, "amount": amount,
                    "unit": "pages" if point == "gup" else "bytes", "frames": stack_table[stack_id]})
    return out


def dmabuf_inodes(buffer):
    """The dma-bufs a method's buffer is: the heap buffer itself, the udmabufs over a memfd, none for a memfd."""
    if buffer.kind in method_table.DMABUF_KINDS:
        return [buffer.inode]
    return [os.fstat(fd).st_ino for fd in getattr(buffer, "dmabuf_fds", ())]


UNMEASURED_FIELDS = ("moved", "reached", "cpu_copied", "page_cache_pages", "pinned_pages", "got_pages", "syscalls",
                     "errors", "device_bytes", "device_to_buffer")


def _unmeasured(result):
    """A method that never reached its I/O measured nothing: its counters are None (shown '-'), never 0."""
    for name in UNMEASURED_FIELDS:
        setattr(result, name, None)
    return result


def _untraced(value, concern, missing):
    return None if concern in missing else value


def _fill(result, total, flows, missing, paths):
    result.cpu_copied = _untraced(total.cpu_copied, "cpu_copy", missing)
    result.page_cache_pages = _untraced(total.pc_added, "page_cache", missing)
    result.pinned_pages = _untraced(total.pinned_pages, "gup", missing)
    result.got_pages = _untraced(total.got_pages, "gup", missing)
    result.syscalls, result.errors = total.calls, total.errors
    result.reached = sum(f.bytes for f in flows if f.dst_kind in MEMORY_KINDS and f.bytes > 0)
    result.flows = [f.__dict__ for f in flows]
    result.paths = {path: c.to_dict() for path, c in paths.items()}


def _from_file_mapping(paths, uncovered):
    """Did page faults outside the traced calls bring in at least the uncovered bytes (a file mapping's)?"""
    other = paths.get("other")
    return bool(uncovered > 0 and other and other.pc_added * dma.PAGE_SIZE >= uncovered)


def _evidence_fields(result, found: "dma.Evidence"):
    result.device_bytes, result.device_to_buffer = found.device_bytes, found.device_to_buffer
    return {"device_bytes": found.device_bytes, "device_to_buffer": found.device_to_buffer,
            "undecided": found.undecided}


# ---------------------------------------------------------------------------------------------
# The matrix


class Runner:
    """Runs methods one after another with one tracer; see the module docstring."""

    def __init__(self, source, *, warm=False, chunk=DEFAULT_CHUNK, report=None, offer=None, tracer=None,
                 window=None):
        from ..probes.tracer import Tracer

        self.source = source
        self.warm = warm
        self.chunk = chunk
        self.report = report or feature_detection.detect()
        self.offer = offer or method_table.KernelOffer(self.report)
        self.tracer = tracer or Tracer(pid=os.getpid(), ignore_self=False, stacks=True, report=self.report)
        self.missing = self.tracer.snapshot().missing_concerns()
        self.stacks: Dict[int, List[str]] = {}
        self._kallsyms = None
        self._iterator = None  # DmabufIterator once needed; False where the kernel has no iter/dmabuf
        self.no_block_device = dma.block_device_missing(source.path)
        # Frames the device may write for one method: the payload, its page cache, readahead past it.
        pages = max(dma.DEVICE_MAP_PAGES, 3 * source.size // dma.PAGE_SIZE)
        self.window = window or dma.Window([os.getpid()], max_pages=pages)

    def close(self):
        if self._iterator:
            self._iterator.close()
        self.window.close()
        self.tracer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, methods) -> ValidateRun:
        results = [self.run_measured(method) for method in methods]
        return ValidateRun(results, self.source, self.warm, list(self.tracer.hooks), dict(self.missing), self.stacks,
                           kernel=dict(self.report.kernel))

    def run_measured(self, method) -> MethodResult:
        """run_one, and again (EVIDENCE_ATTEMPTS in all) while the kernel skipped runs of the block-layer probe in
        the window: a completion that interrupts another's on the same CPU is not shown to the probe, by chance
        (more often on a loaded machine), so the next load is likely whole. The kept result says how many
        loads it took; one whose evidence stayed cut is judged with that loss (unmeasured where it matters)."""
        attempts = 0
        while True:
            attempts += 1
            result = self.run_one(method)
            if not result.evidence_skips or attempts == EVIDENCE_ATTEMPTS:
                break
        if attempts > 1:
            result.notes.append(f"loaded {attempts} times: the kernel skipped runs of the block-layer probe in the "
                                "earlier loads (nested completions), so their DMA evidence was not whole")
        return result

    def run_one(self, method) -> MethodResult:
        size = self.source.size
        result = MethodResult(method.name, method.summary, method.buffer, method.direct, size, absent("?"))
        why_not = self.offer.missing(method)
        if why_not:
            result.verdict = absent(why_not)
            return _unmeasured(result)
        if not self.warm:
            result.cached_at_start = drop_page_cache(self.source.path)
            if result.cached_at_start:
                result.notes.append(f"{result.cached_at_start} bytes of the file stayed in the page cache though "
                                    "dropped five times: the device did not read them for this method")
        result.started_ns = time.monotonic_ns()
        started = time.monotonic()
        try:
            buffer = method_table.BUFFERS[method.buffer](size)
        except (OSError, DmabufTopError) as error:
            return self._failed_before_io(result, "allocating the buffer", error)
        allocated = time.monotonic()
        result.alloc_ms = (allocated - started) * 1000
        result.buffer_inode = buffer.inode
        inodes = dmabuf_inodes(buffer)
        try:
            self._snapshot_buffers(result, inodes)
            try:
                fd = os.open(self.source.path, os.O_RDONLY | (os.O_DIRECT if method.direct else 0))
            except OSError as error:
                return self._failed_before_io(result, "opening the file", error)
            try:
                self.window.start()
                before = self.tracer.snapshot()
                result.io_started_ns = time.monotonic_ns()
                io_started = time.monotonic()
                try:
                    result.moved = method.load(buffer, fd, size, self.chunk)
                except OSError as error:
                    result.errno = error.errno
                io_ended = time.monotonic()
                result.ended_ns = time.monotonic_ns()
                after = self.tracer.snapshot()
                writes, lost = self.window.stop()
                result.evidence_skips = self.window.skipped_runs
            finally:
                os.close(fd)
            result.io_ms = (io_ended - io_started) * 1000
            if result.errno is None:
                result.checksum = "ok" if digest(buffer.view()) == self.source.digest else "mismatch"
            found = self._dma_evidence(buffer, writes, lost)
            self._snapshot_buffers(result, inodes)
        finally:
            closing = time.monotonic()
            buffer.close()
            result.close_ms = (time.monotonic() - closing) * 1000
            result.closed_ns = time.monotonic_ns()
        self._snapshot_buffers(result, inodes)
        self._judge(result, before, after, found, method.async_io)
        return result

    def _dma_evidence(self, buffer, writes, lost) -> "dma.Evidence":
        """The window's device writes against the buffer's own pages (read before the buffer is closed)."""
        why_not = [self.no_block_device, lost]
        frames, memfds = None, []
        try:
            frames, memfds = dma.method_pages(buffer)
        except (DmabufTopError, OSError) as error:
            why_not.append(f"the buffer's page frames cannot be read: {error}")
        if self.window.probe is None:
            why_not.append(self.window.missing)
        try:
            return dma.judge(writes, frames, why_not, memfds, self.window.since())
        except (DmabufTopError, OSError) as error:  # a memfd's frames, read when its places cannot decide
            return dma.judge(writes, None, why_not + [f"the buffer's page frames cannot be read: {error}"])

    def _snapshot_buffers(self, result, inodes):
        """The kernel's own record of this method's dma-bufs now (iter/dmabuf), outside the traced window."""
        if not inodes or self._iterator is False:
            return
        if self._iterator is None:
            try:
                from ..probes.dmabuf_iter import DmabufIterator

                self._iterator = DmabufIterator()
            except DmabufTopError:
                self._iterator = False  # no iter/dmabuf here: the report says the buffers were not listed
                return
        now = time.monotonic_ns()
        result.inventory_passes.append(now)
        result.snapshots += [BufferSnapshot(now, b.inode, b.exporter, b.name, b.size, b.file_refs, b.attachment_count,
                                            b.backing_inode) for b in self._iterator.read() if b.inode in inodes]

    @staticmethod
    def _failed_before_io(result, doing, error):
        number = getattr(error, "errno", None)
        result.errno = number
        result.notes.append(f"{doing} failed: {error}")
        what = f"{errno_module.errorcode.get(number, number)}, {doing}" if number else doing
        result.verdict = Verdict("failed", f"failed ({what})", reasons=(str(error),))
        return _unmeasured(result)

    def _judge(self, result, before, after, found, async_io=False):
        tgid = os.getpid()
        paths = _path_deltas(before, after, tgid)
        total = sum(paths.values(), Counters())
        flows = _flows(before, after)
        _fill(result, total, flows, self.missing, paths)
        result.evidence = _evidence(self.tracer, before, after, self.stacks, self.kallsyms())
        unmeasured = unmeasured_copy_sites(flows)
        other = paths.get("other")
        if async_io:
            # The page cache filled inside io_uring or io_submit, not by faults on a file mapping.
            unmeasured += (ASYNC_IO_UNSEEN,)
        elif other and (other.pc_added or other.cpu_copied):
            unmeasured += ("page-cache work happened outside the traced syscalls (page faults on a file mapping?)",)
        device = _evidence_fields(result, found)
        uncovered = result.payload - (found.device_to_buffer or 0)
        result.verdict = verdict(Measurement(
            payload=result.payload, moved=result.moved if result.errno is None else 0, reached=result.reached,
            cpu_copied=total.cpu_copied, page_cache_pages=total.pc_added, pinned_pages=total.pinned_pages,
            got_pages=total.got_pages, calls=total.calls, errors=total.errors, errno=result.errno,
            checksum_ok=None if result.checksum is None else result.checksum == "ok",
            missing=self.missing, unmeasured=unmeasured,
            from_file_mapping=not async_io and _from_file_mapping(paths, uncovered),
            **device))

    def kallsyms(self):
        if self._kallsyms is None:
            self._kallsyms = self.tracer.kallsyms()
        return self._kallsyms


def run_matrix(directory, size=DEFAULT_SIZE, names=None, warm=False, chunk=DEFAULT_CHUNK, keep_file=False):
    """Prepare the file, run the chosen methods, remove the file; a ValidateRun."""
    feature_detection.require_bpf_privileges("validate")
    chosen = method_table.select(names)
    source = prepare_file(directory, size)
    try:
        with Runner(source, warm=warm, chunk=chunk) as runner:
            return runner.run(chosen)
    finally:
        if not keep_file:
            os.unlink(source.path)


# ---------------------------------------------------------------------------------------------
# A user's command


def trace_command(argv, report=None):
    """Run argv (never through a shell) traced from its first instruction; a ValidateRun with one row.

    The payload is what reached dma-bufs and memfds through traced calls; copies are counted on
    those calls only (the command's own start-up reads, e.g. an interpreter loading modules, do
    not count). A copy into anonymous memory made before the bytes were written into the buffer
    is noted, not counted.
    """
    from ..probes.tracer import Tracer
    from ..recording.command import Command

    feature_detection.require_bpf_privileges("validate")
    report = report or feature_detection.detect()
    command = Command(argv)
    try:
        tracer = Tracer(pid=command.pid, stacks=True, report=report)
    except BaseException:
        command.abandon()
        raise
    window = dma.Window([command.pid])
    buffers = dma.CommandBuffers(command.pid)
    with tracer:
        try:
            before = tracer.snapshot()
            missing = before.missing_concerns()
            window.start()
            started = time.monotonic()
            command.release()
            returncode = dma.watch(command, window, buffers)
            io_s = time.monotonic() - started
            after = tracer.snapshot()
            writes, lost = window.stop()
            reached = {target.inode for target in after.by_target if target.kind in MEMORY_KINDS}
            found = _command_evidence(buffers, writes, lost, window, reached)
            async_io = buffers.async_io
        finally:
            buffers.close()
            window.close()
        name = os.path.basename(argv[0])
        result = MethodResult(name, " ".join(argv), "command", False, 0, absent("?"))
        result.ended_ns = result.closed_ns = time.monotonic_ns()
        result.started_ns = result.io_started_ns = result.ended_ns - int(io_s * 1e9)
        stacks: Dict[int, List[str]] = {}
        measure_command(result, before, after, missing, command.pid, returncode, found, async_io)
        result.evidence = _evidence(tracer, before, after, stacks, tracer.kallsyms())
        result.io_ms = io_s * 1000
    run = ValidateRun([result], None, True, list(tracer.hooks), missing, stacks, list(argv), returncode,
                      kernel=dict(report.kernel))
    return run


def _command_evidence(buffers, writes, lost, window, reached) -> "dma.Evidence":
    """A command's device writes against the pages of the buffers it held (see validate/evidence.py)."""
    why_not = [lost, window.missing]
    frames, memfds = None, []
    try:
        frames, memfds, unknown = buffers.pages(writes, reached)
        why_not += unknown
        if buffers.held and not frames and not memfds:
            frames = None
        found = dma.judge(writes, frames, why_not, memfds, window.since())
    except (DmabufTopError, OSError) as error:
        frames = None
        why_not.append(f"the page frames of the command's buffers cannot be read: {error}")
        found = dma.judge(writes, None, why_not)
    if frames is None and not buffers.held:
        return dma.Evidence(found.device_bytes, None, 0, (
            "the command held no dma-buf or memfd that was seen (one made and closed between two looks, 1 ms apart, "
            "is missed)",))
    return found


def measure_command(result, before, after, missing, tgid, returncode, found=None, async_io=False):
    """Fills result and its verdict from the window of a command (pure apart from its inputs).

    The payload is what the traced calls moved into dma-bufs and memfds, or, when the DMA evidence saw the
    command's buffers, their size if larger (a memcpy into a mapped buffer is no traced call).
    """
    found = found or dma.Evidence(undecided=("no DMA evidence was taken for this command",))
    total = _target_deltas(before, after, MEMORY_KINDS)
    flows = [f for f in _flows(before, after) if f.dst_kind in MEMORY_KINDS]
    paths = _path_deltas(before, after, tgid)
    _fill(result, total, flows, missing, paths)
    buffer_bytes = found.buffer_pages * dma.PAGE_SIZE if found.device_to_buffer is not None else 0
    result.payload = result.moved = max(result.reached, buffer_bytes)
    anonymous = sum(f.bytes for f in _flows(before, after) if f.path == "read" and f.dst_kind == "none")
    if anonymous:
        result.notes.append(f"{anonymous} bytes were also read into anonymous memory; if the command then copied "
                            "them into its buffer, that copy is one more than shown")
    unmeasured = list(unmeasured_copy_sites(flows))
    if not result.payload:
        unmeasured.append("no traced call moved bytes into a dma-buf or a memfd")
    other = paths.get("other")
    if other and other.pc_added:
        # Any program faults its own executable and libraries in: not a reason to doubt the payload's path.
        result.notes.append(f"{other.pc_added} page-cache pages were added by page faults outside traced calls "
                            "(the program's libraries, or data read through a file mapping: a user-space copy from "
                            "a mapping is invisible to kernel hooks)")
    errno_value = None
    if returncode:
        result.notes.append(f"the command exited with code {returncode}")
    failed_flows = [f for f in flows if f.error]
    if failed_flows and not result.reached:
        errno_value = -failed_flows[0].error
    result.errno = errno_value
    device = _evidence_fields(result, found)
    if not result.payload:  # nothing to judge: the evidence decides nothing either
        device["undecided"] = device["undecided"] or ("no buffer was loaded",)
    uncovered = result.payload - (found.device_to_buffer or 0)
    if async_io:
        # io_uring's and AIO's reads fill the page cache outside any traced syscall, like a file mapping's faults.
        unmeasured.append(ASYNC_IO_UNSEEN)
    result.verdict = verdict(Measurement(
        payload=result.payload, moved=result.moved, reached=result.reached, cpu_copied=total.cpu_copied,
        page_cache_pages=total.pc_added, pinned_pages=total.pinned_pages, got_pages=total.got_pages,
        calls=total.calls, errors=total.errors, errno=errno_value, missing=missing, unmeasured=tuple(unmeasured),
        from_file_mapping=not async_io and _from_file_mapping(paths, uncovered), **device))
    return result
