"""The sampler shared by the live view and the Prometheus exporter: what they read from the kernel, when.

`Sources` opens everything once (the iterators kept attached, the I/O tracer,
a taskstats socket) and degrades piece by piece: a part the kernel refuses is
left out with a sentence for the header, never a crash. `Sources.sample()` takes
one `Sample`: an inventory (one iter/dmabuf read, which also feeds the buffer
index, inventory.index), a trace snapshot read by `TraceReader` (which forgets
the counters of buffers gone), and taskstats.

With `creations`, the tracer's lifecycle probe rings its records (io_records=False: the I/O programs keep
counting and ring nothing) and a leak_creations.CreationFeed follows them: each Sample then carries who created
each buffer (`creations`, for the Leaks pane and the cgroups' created bytes); None without it.

`Collector` is the bpftop-style update thread: it samples, turns the sample into a
Frame (LiveModel.update) and posts it, then sleeps `interval - elapsed` so the
cadence holds however long the sampling took. The drawing loop never waits for
the kernel. `run_batch` is the same without a thread, for -C and --json.

Nothing here draws: the curses view (live/app.py) and the exporter (prometheus.py) are built on it.
`sigterm_exits` makes SIGTERM end either through its `finally` blocks (terminal, sysctls, sockets).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, Sequence

from . import features
from .errors import DmabufTopError
from .inventory.collect import IteratorSnapshots, collect
from .inventory.index import BufferIndex
from .leak_creations import CreationFeed
from .probes.tracer import Tracer
from .taskstats import TaskStatsClient

log = logging.getLogger(__name__)

# taskstats is one netlink round trip per process: asked for the processes on screen, not for every
# task that ever read a file.
MAX_TASKSTATS = 64


@dataclass
class Sample:
    """What the sampler read at one instant. trace: a trace_model.TraceSnapshot or None (tracing
    unavailable, or still starting when tracing_pending); taskstats: {pid: taskstats.TaskStats or None};
    delayacct: a taskstats.DelayAccounting (since when it is on, so whose delays are kept) or a bool (on:
    every process's delays are kept); cannot_see: sentences learnt since the model was made (a tracer that
    failed to start); index: the BufferIndex that learnt this inventory (None: whoever needs one makes it
    from the inventory); creations: {inode: leaks.Creation} of the buffers whose creation the lifecycle probe
    saw (None: no such probe here, or not asked for)."""

    monotonic: float
    wall: float
    inventory: object
    trace: Optional[object] = None
    taskstats: Mapping[int, object] = field(default_factory=dict)
    delayacct: object = False
    tracing_pending: bool = False
    cannot_see: Sequence[str] = ()
    index: Optional[BufferIndex] = None
    creations: Optional[Mapping[int, object]] = None


class Sources:
    """pid: one process only. trace: attach the I/O hooks. background: the inventory only, and the rest
    (the taskstats socket, importing pyroute2; the feature trials; the BPF load: tens of seconds on an
    emulated CPU) in a thread of its own once `start_background()` is called: the view calls it after its
    first paint, since a thread started earlier competes with that paint for the interpreter. Samples
    taken meanwhile say `tracing_pending` and carry no taskstats (delays read '-'). Batch modes and the
    exporter open everything before their first sample instead: their first figures are already traced.
    creations: follow the lifecycle probe's export records (with trace); creation_stacks: with their allocation
    stacks (the Leaks pane; the exporter needs only the creators' cgroups)."""

    def __init__(self, pid: Optional[int] = None, trace: bool = True, taskstats: bool = True, delayacct: bool = False,
                 background: bool = False, tracer_options: Optional[dict] = None, creations: bool = False,
                 creation_stacks: bool = False):
        self.pid = pid
        self._creations = creations and trace
        self._creation_stacks = creation_stacks
        self.feed: Optional[CreationFeed] = None
        self.delayacct = delayacct
        self.cannot_see: List[str] = []
        self.late_cannot_see: List[str] = []  # learnt by the background start, after the model was made
        self.report = None
        self.tracer = None
        self._lock = threading.Lock()
        self._closed = False
        self._starting: Optional[threading.Thread] = None
        self._trace = trace
        self._tracer_options = dict(tracer_options or {})  # more Tracer arguments (tests: ignore_self, max_entries)
        self.taskstats = None
        if not features.DMA_HEAP_DIR.exists() and not features.UDMABUF_DEVICE.exists():
            self.cannot_see.append("no dma-buf heaps and no udmabuf on this kernel (only other exporters' buffers)")
        self._snapshots = None
        self._trace_reader = None
        self.index = BufferIndex()  # fed by each sample's inventory read
        self._collect: Callable = self._open_inventory()
        if background:
            self._starting = threading.Thread(target=self._open_in_background, args=(taskstats, trace),
                                              name="dmabuf-top tracer start", daemon=True)
            return
        try:
            self._open_rest(taskstats, trace, self.cannot_see)
        except BaseException:
            self.close()
            raise

    def start_background(self):
        """Start opening what `background` deferred (idempotent; never once closed)."""
        with self._lock:
            if self._starting is not None and self._starting.ident is None and not self._closed:
                self._starting.start()

    def _open_in_background(self, taskstats, trace):
        try:
            self._open_rest(taskstats, trace, self.late_cannot_see)
        except Exception as error:  # said on screen, not lost with the thread (nor printed over the screen)
            log.exception("opening taskstats and the I/O tracer")
            self.late_cannot_see.append(f"no I/O tracing ({type(error).__name__}: {error})")

    def _open_rest(self, taskstats, trace, cannot_see):
        if taskstats:
            try:
                client = TaskStatsClient()
                with self._lock:
                    if self._closed:
                        client.close()
                        return
                    self.taskstats = client
            except DmabufTopError as error:
                cannot_see.append(f"no delay accounting ({error})")
                self.delayacct = False
        if trace:
            self._start_tracing(cannot_see)

    def _start_tracing(self, cannot_see):
        """Feature trials, then the tracer with the hooks they allow; a refusal becomes a sentence."""
        report = None
        try:  # the tracer picks its hooks from the trial loads; an inventory alone needs none of them
            report = features.detect()
        except DmabufTopError as error:
            cannot_see.append(f"feature detection failed ({error})")
        try:
            # No I/O stacks: neither the view nor the exporter shows them, and each costs the traced work.
            # Lifecycle records (and allocation stacks, at exports only) when creations are followed.
            tracer = Tracer(pid=self.pid, report=report, stacks=self._creation_stacks, record=self._creations,
                            io_records=False, **self._tracer_options)
        except DmabufTopError as error:
            cannot_see.append(f"no I/O tracing ({error})")
            return
        feed = None
        if self._creations:
            feed = CreationFeed(tracer=tracer).open()
            if feed.sees_exports:
                feed.follow()
            else:  # creators stay "not known" (Sample.creations None), never "none created"
                feed.close()
                feed = None
                cannot_see.append("who creates buffers (no hook on dma_buf_export: lifecycle tracepoints or fexit)")
        with self._lock:
            if self._closed:  # the view ended while the hooks were loading
                if feed is not None:
                    feed.close()
                tracer.close()
                return
            self.report, self.tracer, self.feed = report, tracer, feed

    @property
    def tracing_pending(self) -> bool:
        """The background start has not finished (or not begun) and the hooks were asked for."""
        starting = self._starting
        return self._trace and starting is not None and (starting.ident is None or starting.is_alive())

    def _open_inventory(self):
        try:
            self._snapshots = IteratorSnapshots()
            return self._snapshots.take
        except DmabufTopError as error:
            self.cannot_see.append(f"inventory without iterators ({error})")
            return collect

    def _reader(self, tracer):
        if self._trace_reader is None or self._trace_reader.tracer is not tracer:
            self._trace_reader = TraceReader(tracer)
        return self._trace_reader

    def take_inventory(self):
        return self._collect()

    def sample(self, pids_hint=()) -> Sample:
        pending = self.tracing_pending
        with self._lock:
            tracer, taskstats, feed = self.tracer, self.taskstats, self.feed
        read_ns = time.monotonic_ns()
        inventory = self._collect()
        creations = None
        if feed is not None:
            creations = feed.current()  # after the read: a buffer made during it has its creation
            feed.keep_only(_inodes(inventory), read_ns)
        self.index.learn_inventory(inventory)
        trace = self._reader(tracer).snapshot(self.index) if tracer is not None else None
        stats = {}
        if taskstats is not None:
            pids = [p.pid for p in inventory.processes][:MAX_TASKSTATS]
            if trace is not None:
                pids += [pid for pid in busiest(trace) if pid not in pids][: max(MAX_TASKSTATS - len(pids), 0)]
            pids += [pid for pid in pids_hint if pid not in pids]
            if self.pid is not None:
                pids = [self.pid]
            for pid in pids:
                try:
                    stats[pid] = taskstats.for_process(pid)
                except DmabufTopError as error:
                    log.info("taskstats for %d: %s", pid, error)
        return Sample(time.monotonic(), time.time(), inventory, trace, stats, self.delayacct,
                      tracing_pending=pending and trace is None, cannot_see=tuple(self.late_cannot_see),
                      index=self.index, creations=creations)

    def creations(self):
        """{inode: leaks.Creation} known now, None when creations are not followed (or not yet: still loading)."""
        with self._lock:
            feed = self.feed
        return None if feed is None else feed.current()

    def close(self):
        with self._lock:
            self._closed = True  # a tracer still loading closes itself when it is ready
            # the feed first: its thread polls the tracer's ring
            closers = (self.feed, self.taskstats, self.tracer, self._snapshots)
            self.feed = self.taskstats = self.tracer = self._snapshots = None
        for closer in closers:
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # closing must not hide the error that brought us here
                    log.exception("closing %r", closer)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TraceReader:
    """Snapshots of a Tracer for a reader that owns it and shows buffers from an inventory (the live view,
    the exporter). Each read forgets the counters of dma-bufs and memfds gone (BufferIndex.forget_gone,
    the recorder's rule): otherwise io_by_target fills under churn (a 10-minute soak left it at 8192 of
    8192) and refuses the keys of new buffers. A forgotten target belonged to no buffer on show, so no
    rate the view shows drops; one that moves again counts from zero, as a new key."""

    def __init__(self, tracer):
        self.tracer = tracer
        self._previous = {}
        self.forgotten = 0  # targets forgotten so far (tests and benchmarks read it)

    def snapshot(self, index: BufferIndex):
        """index: the reader's BufferIndex, which has learnt the inventory this snapshot goes with."""
        # minimal: targets and tasks only (outcomes, page cache and lifecycle maps are never shown)
        trace = self.tracer.snapshot(minimal=True)
        self.forgotten += len(index.forget_gone(self.tracer, trace, self._previous))
        self._previous = trace.by_target
        return trace


def _inodes(inventory) -> List[int]:
    """Every buffer's inode, from the columns when the inventory has them (no object per buffer)."""
    if inventory.arrays is not None:
        return inventory.arrays.columns.inode.tolist()
    return [entry.buffer.inode for entry in inventory.buffers]


def busiest(trace) -> List[int]:
    """Traced processes, most bytes moved first."""
    moved = {}
    for (tgid, _path), counters in trace.by_task.items():
        moved[tgid] = moved.get(tgid, 0) + counters.bytes
    return sorted(moved, key=lambda tgid: (-moved[tgid], tgid))


def kernel_release():
    return os.uname().release


class _Terminated(SystemExit):
    pass


@contextmanager
def sigterm_exits():
    """SIGTERM becomes SystemExit(143) in the main thread, so every `finally` (terminal, sysctls) runs."""
    def handler(signum, frame):
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Collector(threading.Thread):
    """Samples every `interval` seconds and calls `post(model.update(sample))` (model: a live.model.LiveModel);
    an error is posted as `post_error(exc)`.
    count: stop after that many frames were posted."""

    def __init__(self, sources: Sources, model, interval: float, post, post_error, count=None,
                 baseline=False, clock=time.monotonic):
        super().__init__(name="dmabuf-top collector", daemon=True)
        self.sources = sources
        self.model = model
        self.interval = interval
        self.post = post
        self.post_error = post_error
        self.count = count
        self.clock = clock
        self.stop_event = threading.Event()
        self.cpu_seconds = 0.0  # this thread's CPU time spent sampling (benchmarks read it)
        self.samples = 0
        # baseline: the first sample only starts the counters (batch mode prints rates from its first table on)
        self.baseline = baseline

    def run(self):
        try:
            while not self.stop_event.is_set():
                started = self.clock()
                cpu = time.thread_time()
                frame = self.model.update(self.sources.sample())
                self.cpu_seconds += time.thread_time() - cpu
                if self.baseline:
                    self.baseline = False
                else:
                    self.samples += 1
                    self.post(frame)
                if self.count is not None and self.samples >= self.count:
                    return
                self.stop_event.wait(max(self.interval - (self.clock() - started), 0))
        except BaseException as error:  # handed to the drawing loop, which restores the terminal first
            self.post_error(error)

    def stop(self):
        self.stop_event.set()


def run_batch(sources: Sources, model, interval: float, count: Optional[int], emit) -> int:
    """-C and --json: a baseline sample, then `emit(frame)` after every interval, `count` times.

    Runs in the calling thread (nothing to draw meanwhile); deadlines are kept on an
    absolute schedule, so a slow sample shortens the next sleep instead of drifting.
    """
    model.baseline(sources.sample())
    deadline = time.monotonic()
    shown = 0
    while count is None or shown < count:
        deadline += interval
        time.sleep(max(deadline - time.monotonic(), 0))
        emit(model.update(sources.sample()))
        shown += 1
    return 0
