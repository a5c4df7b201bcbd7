"""Samples for the live view's unit tests: real Inventory, TraceSnapshot and TaskStats objects, no kernel."""
from dmabuf_top.inventory.inventory import build_inventory
from dmabuf_top.live.model import LiveModel
from dmabuf_top.sampler import Sample
from dmabuf_top.inventory.types import Buffer
from dmabuf_top.probes.iopaths import Counters, Target
from dmabuf_top.inventory.types import FdRef, Holders, MapRef
from dmabuf_top.taskstats import Delay, TaskStats
from dmabuf_top.probes.hooks import HookState, State
from dmabuf_top.trace_model import TraceSnapshot

MiB = 1 << 20
HOSTILE = b"\x1b[2J\x1b]0;owned\x07evil\nname\t\xff\xfe<b>"


def buffers(extra=()):
    return [Buffer(inode=101, size=16 * MiB, exporter="system", name=b"weights", file_refs=1, attachment_count=0),
            Buffer(inode=102, size=4 * MiB, exporter="udmabuf", name=HOSTILE, file_refs=2, attachment_count=1,
                   backing_inode=555, backing_dev=42),
            Buffer(inode=103, size=MiB, exporter="system", name=None, file_refs=1, attachment_count=0),
            *extra]


def inventory(extra=(), holders=None):
    holders = holders or Holders(fds=[FdRef(10, 3, 101), FdRef(10, 4, 102), FdRef(20, 5, 102)],
                                 maps=[MapRef(20, 102, 0x1000, 0x2000)],
                                 comms={10: b"loader", 20: b"\x1b[31mnpu"})
    return build_inventory(buffers(extra), holders, "iterator", "iterator")


LIVE_HOOKS = [HookState("enter_read", "read", "syscalls:sys_enter_read", State.LIVE, "tracepoint", "present"),
              HookState("enter_write", "write", "syscalls:sys_enter_write", State.LIVE, "tracepoint", "present"),
              HookState("copy_filemap_read", "cpu_copy", "filemap_read", State.MISSING, None, "fentry refused (EPERM)"),
              HookState("gup_fast_enter", "gup", "gup_fast_fallback", State.MISSING, None, "fentry refused (EPERM)")]


def trace(read_bytes=0, shmem_write=0, hooks=LIVE_HOOKS):
    """Loader (pid 10) read `read_bytes` into buffer 101; pid 20 wrote into udmabuf 102's memfd."""
    by_target = {Target(101, 0, "read", "dmabuf", False): Counters(calls=1, bytes=read_bytes),
                 Target(555, 42, "write", "shmem", False): Counters(calls=1, bytes=shmem_write),
                 Target(9, 1, "read", "file", False): Counters(calls=5, bytes=7)}
    by_task = {(10, "read"): Counters(calls=4 if read_bytes else 0, bytes=read_bytes, latency_ns=8000 if read_bytes else 0),
               (20, "write"): Counters(calls=1, bytes=shmem_write)}
    return TraceSnapshot(by_target, by_task, {}, {}, {}, {}, 0, list(hooks))


def taskstats(blkio_ns):
    delays = {"cpu": Delay(1, 10), "blkio": Delay(3, blkio_ns), "swapin": Delay(0, 0), "freepages": Delay(0, 0)}
    return {10: TaskStats(10, 1, "loader", 16, delays)}


def sample(t, read_bytes=0, blkio_ns=0, extra=(), shmem_write=0, hooks=LIVE_HOOKS):
    return Sample(monotonic=t, wall=1_800_000_000 + t, inventory=inventory(extra), trace=trace(read_bytes, shmem_write, hooks),
                  taskstats=taskstats(blkio_ns), delayacct=True)


def two_frames(**kwargs):
    """A first frame at t=100 and a second 2.0 s later: 64 MiB read into 'weights', 0.5 s of block I/O wait."""
    model = LiveModel(1.0, kernel="7.2.13-test", **kwargs)
    first = model.update(sample(100.0))
    second = model.update(sample(102.0, read_bytes=64 * MiB, blkio_ns=500_000_000, shmem_write=MiB))
    return first, second
