"""Who made each live dma-buf, for `dmabuf-top leaks`: the lifecycle probe's export records as leaks.Creation.

CreationFeed runs a Tracer with the lifecycle probe's records and allocation stacks only (io_records=False: the
I/O programs ring nothing). Each export record becomes a Creation keyed by inode: creator pid/tid/comm, the
creator's cgroup path, and the allocation stack, kernel frames (kallsyms) then user frames, innermost first. User
frames are symbolized through the creator's maps, read at the first record naming it: `wait()` drains the ring
every POLL_S, so a creator that exits right after the export (a child passing its fd on) is usually still there;
when it is not, a frame in an object the Symbolizer met elsewhere still gets its symbol, else it stays
"object+0xoff [build id]".

The kernel's own references come as records too: each buffer's last HOLD_EVENTS_PER_BUFFER get/put/attach/detach
events (leaks.HoldEvent: who, when) are kept in `holds`, for what `leaks` says of a buffer no process holds. They
come from the dma_buf tracepoints (7.0+), else fexit dma_buf_get and fentry dma_buf_put (no attach/detach events
then); where neither hooks, `sees_holds` is False and `leaks` says "missing".

Memory is bounded: a Creation (and a buffer's hold events) leaves at its buffer's release record, and
`keep_only(alive inodes)` drops those whose release was lost; MAX_CREATIONS caps what a storm of exports can add
between two inventories (and the buffers with hold events); each drain reads at most one ring's worth of records.

The live view and the exporter borrow their sampler's Tracer (`CreationFeed(tracer=...)`: not closed here) and
`follow()` it: a thread of its own waits on the ring (no wake-up while nothing is created) and learns each record
as it comes, whatever the refresh interval or the scrape period; `current()` is a copy for the sampler's thread.
"""
import logging
import os
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Iterable, Optional, Tuple

from .leaks import HOLD_EVENTS, Creation, HoldEvent
from .probes.buffer_lifecycle import LifecycleRecord
from .probes.hooks import FENTRY
from .probes.tracer import Tracer
from .stacks import kernel_frames
from .symbolize import Symbolizer, cgroup_paths

log = logging.getLogger(__name__)

POLL_S = 0.1
MAX_CREATIONS = 1 << 16
# The programs that see a buffer's creation: the 7.0 tracepoint, else fexit dma_buf_export (probes/hooks.py).
EXPORT_PROGRAMS = frozenset({"lifecycle_dma_buf_export", "lifecycle_fexit_export"})
# The kernel's references taken and dropped: dma_buf_get and dma_buf_put, by tracepoint (7.0+) else fexit/fentry.
GET_PROGRAMS = frozenset({"lifecycle_dma_buf_get", "lifecycle_fexit_get"})
PUT_PROGRAMS = frozenset({"lifecycle_dma_buf_put", "lifecycle_fentry_put"})
HOLD_EVENTS_PER_BUFFER = 4


class CreationFeed:
    def __init__(self, tracer_factory: Optional[Callable[[], Tracer]] = None, symbolizer: Optional[Symbolizer] = None,
                 read_cgroups: Callable[[], Dict[int, str]] = cgroup_paths, clock=time.monotonic,
                 tracer: Optional[Tracer] = None):
        """tracer: one already loaded with lifecycle records (record=True), borrowed: close() leaves it open."""
        self._borrowed = tracer
        self._tracer_factory = tracer_factory or (lambda: Tracer(record=True, stacks=True, io_records=False))
        self._symbolizer = symbolizer or Symbolizer()
        self._read_cgroups = read_cgroups
        self._clock = clock
        self._tracer = None
        self._cgroups: Dict[int, str] = {}
        self._stacks: Dict[Tuple, Tuple[str, ...]] = {}  # one tuple per distinct stack, shared by its buffers
        self.creations: Dict[int, Creation] = {}
        self.holds: Dict[int, Deque[HoldEvent]] = {}  # inode -> its last hold events, oldest first
        self.lost = 0  # export records not kept (MAX_CREATIONS reached)
        self.failed = 0  # records follow() could not learn (logged)
        self._lock = threading.Lock()  # creations, between follow()'s thread and current()/keep_only()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def open(self):
        self._tracer = self._borrowed if self._borrowed is not None else self._tracer_factory()
        self._tracer.kallsyms()  # read once now, not in the first drain
        self._symbolizer.remember(os.getpid())  # libc and the loader: objects most creators map too
        self._cgroups = self._read_cgroups()
        return self

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tracer is not None and self._borrowed is None:
            self._tracer.close()
        self._tracer = None

    def follow(self):
        """Learn records in a thread of its own from now on (read them with current()); returns self."""
        self._thread = threading.Thread(target=self._follow, name="dmabuf-top creations", daemon=True)
        self._thread.start()
        return self

    def _follow(self):
        tracer = self._tracer
        while not self._stop.is_set():
            # Waits on the ring up to POLL_S: a wake-up per record batch, none while nothing happens.
            for record in tracer.poll_records(timeout_ms=int(POLL_S * 1000), max_records=tracer.ring_capacity):
                if isinstance(record, LifecycleRecord):
                    try:
                        with self._lock:
                            self.learn(record)
                    except Exception:  # one record that cannot be read must not end the thread (and all the rest)
                        self.failed += 1
                        log.exception("lifecycle record %r", record)

    def current(self) -> Dict[int, Creation]:
        """A copy of the creations known now (safe while follow()'s thread learns more)."""
        with self._lock:
            return dict(self.creations)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    @property
    def tracer(self):
        return self._tracer

    @property
    def sees_exports(self) -> bool:
        """A creation hook is live: without one no Creation ever comes, and creators are "not known", not none."""
        return any(status.live for status in self._tracer.hooks if status.program in EXPORT_PROGRAMS)

    @property
    def sees_holds(self) -> bool:
        """dma_buf_get and dma_buf_put are both hooked: the hold events kept are all that happened since the start."""
        live = {status.program for status in self._tracer.hooks if status.live}
        return bool(live & GET_PROGRAMS) and bool(live & PUT_PROGRAMS)

    def hold_events(self) -> Optional[Dict[int, Tuple[HoldEvent, ...]]]:
        """{inode: its last hold events, oldest first}; None where the get/put hooks are missing."""
        if not self.sees_holds:
            return None
        with self._lock:
            return {inode: tuple(events) for inode, events in self.holds.items()}

    def drain(self) -> Dict[int, Creation]:
        """Take the records waiting in the ring (one ring's worth at most); returns the creations by inode."""
        for record in self._tracer.drain_records(max_records=self._tracer.ring_capacity):
            if isinstance(record, LifecycleRecord):
                self.learn(record)
        return self.creations

    def wait(self, seconds: float) -> Dict[int, Creation]:
        """Sleep `seconds`, draining the ring every POLL_S meanwhile (creators are read while they live)."""
        deadline = self._clock() + seconds
        while True:
            self.drain()
            left = deadline - self._clock()
            if left <= 0:
                return self.creations
            time.sleep(min(POLL_S, left))

    def learn(self, record: LifecycleRecord):
        if record.event == "release":
            self.creations.pop(record.inode, None)
            self.holds.pop(record.inode, None)
        elif record.event in HOLD_EVENTS and record.inode:
            events = self.holds.get(record.inode)
            if events is None:
                if len(self.holds) >= MAX_CREATIONS:
                    return
                events = self.holds[record.inode] = deque(maxlen=HOLD_EVENTS_PER_BUFFER)
            events.append(HoldEvent(record.event, record.tgid, record.comm, record.timestamp_ns))
        elif record.event == "export" and record.inode:
            if record.inode not in self.creations and len(self.creations) >= MAX_CREATIONS:
                self.lost += 1
                return
            stack, kernel_depth = self._stack(record)
            self.creations[record.inode] = Creation(
                record.inode, record.tgid, record.comm, record.timestamp_ns, record.tid,
                self._cgroup(record.cgroup_id), stack, kernel_depth)

    def keep_only(self, inodes: Iterable[int], read_ns: int):
        """Forget the creations of buffers gone: made before an inventory read at read_ns (time.monotonic_ns)
        that did not show them (their release record was lost)."""
        alive = set(inodes)
        with self._lock:
            self._keep_only(alive, read_ns)

    def _keep_only(self, alive, read_ns):
        for inode in [inode for inode, creation in self.creations.items()
                      if inode not in alive and creation.created_ns < read_ns]:
            del self.creations[inode]
        for inode in [inode for inode, events in self.holds.items()
                      if inode not in alive and events[-1].at_ns < read_ns]:
            del self.holds[inode]

    def _cgroup(self, cgroup_id) -> Optional[bytes]:
        if not cgroup_id:
            return None
        if cgroup_id not in self._cgroups:
            self._cgroups = self._read_cgroups()  # a cgroup made since the last walk
        path = self._cgroups.get(cgroup_id)
        return None if path is None else os.fsencode(path)

    def _stack(self, record) -> Tuple[Optional[Tuple[str, ...]], int]:
        """(frames innermost first, kernel then user, or None; how many are kernel frames)."""
        tracer = self._tracer
        kernel = []
        if record.kernel_stack >= 0:
            # An fentry program's frame stands for the function it hooks; a tracepoint's is left out.
            hooked = {status.program: status.target for status in tracer.hooks if status.via == FENTRY}
            kallsyms = tracer.kallsyms()
            kernel = kernel_frames([kallsyms.name(ip) for ip in tracer.alloc_stack_ips(record.kernel_stack)], hooked)
        user_frames = tracer.alloc_user_stack(record.user_stack) if record.user_stack >= 0 else []
        frames = tuple(kernel) + tuple(self._symbolizer.user_stack(record.tgid, user_frames))
        if not frames:
            return None, 0
        if len(self._stacks) >= MAX_CREATIONS:
            self._stacks.clear()  # only shares storage: the creations keep their own tuples
        return self._stacks.setdefault(frames, frames), len(kernel)
