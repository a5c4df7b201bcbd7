"""Linux delay accounting per process, through the taskstats generic-netlink family.

Why a slow model load was slow is often not in the I/O path at all: the task
waited for block I/O, for memory reclaim, for swap-in, or for a CPU. The
kernel counts each of those waits per task (CONFIG_TASK_DELAY_ACCT) and hands
them out over netlink (CONFIG_TASKSTATS). pyroute2 carries the request; the
reply's struct taskstats is decoded here, because its layout grew over the
years (v8 added reclaim, v9 thrashing, v11 compaction, v13 write-protect
copy, v14 IRQ; v15 interleaved max/min delays that v16 moved to the end) and
we must read only what the running kernel actually sent.

Delay accounting is off by default since 5.14 (kernel.task_delayacct=0):
`delay_accounting()` turns it on for the duration of a view and puts the old
value back on every exit path. The kernel keeps those delays (all but the CPU
wait) only for tasks forked while it is on: a process older than the moment
the view turned it on reads 0 for ever, so `DelayAccounting` says whose
delays are kept, by the process's start time.
"""
import os
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from .errors import DmabufTopError, KernelLacks, NeedsPrivilege

DELAYACCT_SYSCTL = Path("/proc/sys/kernel/task_delayacct")

# Offsets in struct taskstats (include/uapi/linux/taskstats.h) for every version
# but 15; tests/host checks them against the running kernel's BTF. Each entry:
# field -> (offset, struct format, first version that has it).
_FIELDS = {
    "version": (0, "H", 1),
    "cpu_count": (16, "Q", 1),
    "cpu_delay_total": (24, "Q", 1),
    "blkio_count": (32, "Q", 1),
    "blkio_delay_total": (40, "Q", 1),
    "swapin_count": (48, "Q", 1),
    "swapin_delay_total": (56, "Q", 1),
    "ac_comm": (80, "32s", 1),
    "ac_pid": (128, "I", 1),
    "ac_ppid": (132, "I", 1),
    "read_bytes": (248, "Q", 4),
    "write_bytes": (256, "Q", 4),
    "freepages_count": (312, "Q", 8),
    "freepages_delay_total": (320, "Q", 8),
    "thrashing_count": (328, "Q", 9),
    "thrashing_delay_total": (336, "Q", 9),
    "compact_count": (352, "Q", 11),
    "compact_delay_total": (360, "Q", 11),
    "wpcopy_count": (400, "Q", 13),
    "wpcopy_delay_total": (408, "Q", 13),
    "irq_count": (416, "Q", 14),
    "irq_delay_total": (424, "Q", 14),
}

# Version 15 put each delay's max and min right after its total (v16 moved them to
# the end). Only the fields before ac_tgid are taken from it: past that point the
# short-lived layout's padding is not certain, and a wrong number is worse than none.
_V15_FIELDS = {
    "version": (0, "H", 1),
    "cpu_count": (16, "Q", 1),
    "cpu_delay_total": (24, "Q", 1),
    "blkio_count": (48, "Q", 1),
    "blkio_delay_total": (56, "Q", 1),
    "swapin_count": (80, "Q", 1),
    "swapin_delay_total": (88, "Q", 1),
    "ac_comm": (128, "32s", 1),
    "ac_pid": (176, "I", 1),
    "ac_ppid": (180, "I", 1),
    "read_bytes": (296, "Q", 4),
    "write_bytes": (304, "Q", 4),
    "freepages_count": (360, "Q", 8),
    "freepages_delay_total": (368, "Q", 8),
    "thrashing_count": (392, "Q", 9),
    "thrashing_delay_total": (400, "Q", 9),
    "compact_count": (432, "Q", 11),
    "compact_delay_total": (440, "Q", 11),
}

DELAY_KINDS = ("cpu", "blkio", "swapin", "freepages", "thrashing", "compact", "wpcopy", "irq")
DELAY_LABELS = {
    "cpu": "waiting for a CPU",
    "blkio": "block I/O",
    "swapin": "swap-in",
    "freepages": "memory reclaim",
    "thrashing": "thrashing (refaults)",
    "compact": "memory compaction",
    "wpcopy": "write-protect copy",
    "irq": "IRQ/softirq",
}


@dataclass(frozen=True)
class Delay:
    count: int
    total_ns: int


# The CPU wait comes from the scheduler's own run-queue statistics, kept for every task; the other kinds live
# in the task's delay record, which the kernel allocates at fork only while delay accounting is on.
KEPT_FOR_EVERY_TASK = ("cpu",)


@dataclass(frozen=True)
class TaskStats:
    """One process's delay accounting. A kind the kernel does not report is absent from `delays`.
    started: when the process started, in clock ticks since boot (/proc/PID/stat), None if unknown."""

    pid: int
    ppid: int
    comm: str
    version: int
    delays: Dict[str, Delay]
    read_bytes: Optional[int] = None
    write_bytes: Optional[int] = None
    started: Optional[int] = None


def decode_taskstats(raw):
    """struct taskstats bytes (as the kernel sent them) -> TaskStats, reading only what is there."""
    if len(raw) < 2:
        raise DmabufTopError(f"a taskstats reply of {len(raw)} bytes is too short to carry a version")
    (version,) = struct.unpack_from("<H", raw, 0)
    layout = _V15_FIELDS if version == 15 else _FIELDS

    def field(name):
        if name not in layout:
            return None
        offset, fmt, since = layout[name]
        if version < since or offset + struct.calcsize(fmt) > len(raw):
            return None
        (value,) = struct.unpack_from("<" + fmt, raw, offset)
        return value

    delays = {}
    for kind in DELAY_KINDS:
        count, total = field(f"{kind}_count"), field(f"{kind}_delay_total")
        if count is not None and total is not None:
            delays[kind] = Delay(count, total)
    comm = field("ac_comm")
    return TaskStats(
        pid=field("ac_pid") or 0,
        ppid=field("ac_ppid") or 0,
        comm=(comm or b"").split(b"\0", 1)[0].decode("utf-8", "replace"),
        version=version,
        delays=delays,
        read_bytes=field("read_bytes"),
        write_bytes=field("write_bytes"),
    )


class TaskStatsClient:
    """Asks the kernel for a process's (thread group's) accumulated delays."""

    def __init__(self):
        try:  # pyroute2 (~0.12 s) when a client opens: `dmabuf-top --help` imports this module (via the sampler)
            from pyroute2 import TaskStats as _Socket
            from pyroute2.netlink.exceptions import NetlinkError
        except ImportError:  # pragma: no cover - a dependency of the package
            raise DmabufTopError("pyroute2 is missing: reinstall dmabuf-top ('pip install pyroute2')") from None
        self._netlink_error = NetlinkError
        self._socket = _Socket()
        try:
            self._socket.bind()
        except NetlinkError as error:
            self._socket.close()
            raise KernelLacks(
                f"the kernel has no taskstats netlink family ({error}): it needs CONFIG_TASKSTATS"
            ) from None

    def for_process(self, tgid):
        """Delays summed over every thread of `tgid`, or None if it has exited."""
        # pyroute2 lazily, as in __init__ (already loaded by then: a lookup)
        from pyroute2.netlink import NLM_F_REQUEST
        from pyroute2.netlink.taskstats import TASKSTATS_CMD_GET, tcmd

        request = tcmd()
        request["cmd"] = TASKSTATS_CMD_GET
        request["version"] = 1
        request["attrs"].append(["TASKSTATS_CMD_ATTR_TGID", tgid])
        try:
            replies = self._socket.nlm_request(request, self._socket.prid, msg_flags=NLM_F_REQUEST)
        except self._netlink_error as error:
            if error.code == 3:  # ESRCH: gone between listing and asking
                return None
            if error.code in (1, 13):
                raise NeedsPrivilege("reading another process's taskstats needs root: run with sudo") from None
            raise DmabufTopError(f"taskstats request for {tgid} failed: {error}") from None
        for reply in replies:
            raw = _stats_payload(reply)
            if raw is not None:
                stats = decode_taskstats(raw)
                # A TGID request leaves the basic accounting (pid, comm) empty: fill in whose it is.
                return TaskStats(tgid, stats.ppid, stats.comm or _comm_of(tgid), stats.version, stats.delays,
                                 stats.read_bytes, stats.write_bytes, process_start_ticks(tgid))
        return None

    def close(self):
        self._socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


TASKSTATS_TYPE_STATS = 3


def _stats_payload(reply):
    """The raw bytes of TASKSTATS_TYPE_STATS inside the AGGR_TGID/AGGR_PID attribute of a reply.

    pyroute2 decodes only the layouts it knows; the raw attribute is walked here so
    that fields of newer versions are not lost.
    """
    for aggregate in ("TASKSTATS_TYPE_AGGR_TGID", "TASKSTATS_TYPE_AGGR_PID"):
        nested = reply.get_attr(aggregate)
        if nested is None:
            continue
        raw = bytes(nested.data[nested.offset : nested.offset + nested.length])
        payload = find_attribute(raw[4:], TASKSTATS_TYPE_STATS)
        if payload is not None:
            return payload
    return None


def find_attribute(raw, wanted_type):
    """Walk netlink attributes (u16 length, u16 type, value, padded to 4) for one type."""
    offset = 0
    while offset + 4 <= len(raw):
        length, kind = struct.unpack_from("<HH", raw, offset)
        if length < 4 or offset + length > len(raw):
            return None
        if kind & 0x3FFF == wanted_type:
            return raw[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return None


def _comm_of(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def process_start_ticks(pid) -> Optional[int]:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        return start_ticks_in(Path(f"/proc/{pid}/stat").read_bytes())
    except OSError:
        return None


def start_ticks_in(stat: bytes) -> Optional[int]:
    """The start time in a /proc/PID/stat line, or None if the line is cut short."""
    # The comm (field 2) may hold spaces and parentheses: the fields after it follow its last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # field 22, counted from field 3
    except (IndexError, ValueError):
        return None


def boot_ticks() -> int:
    """Now, on the clock and in the unit of process start times: USER_HZ ticks since boot (rounded down,
    as the kernel rounds a start time)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


NOT_KEPT = ("started before delay accounting was turned on: the kernel keeps block I/O, swap-in and reclaim "
            "delays only for processes forked while it is on")


@dataclass(frozen=True)
class DelayAccounting:
    """Whether delay accounting is on (true as a bool), and since when: since_ticks is the boot-clock tick
    (as process start times count them) in which this program turned it on, None when it was on already
    (then every process counts)."""

    on: bool
    since_ticks: Optional[int] = None

    def __bool__(self):
        return self.on

    def why_not_kept(self, started_ticks: Optional[int]) -> Optional[str]:
        """Why a process started at `started_ticks` has no block I/O, swap-in or reclaim delays (its 0 is
        not a measurement), or None when they are kept (or accounting is off, which views say as a whole).

        A process started in the very tick accounting came on may have been forked either side of it:
        n/a too, rather than a 0 that may be false."""
        if not self.on or self.since_ticks is None:
            return None
        if started_ticks is None:
            return "start time unknown (the process has gone): whether the kernel kept its delays is not known"
        return None if started_ticks > self.since_ticks else NOT_KEPT


def delay_accounting_state():
    try:
        return DELAYACCT_SYSCTL.read_text().strip() == "1"
    except OSError:
        return None  # a kernel without CONFIG_TASK_DELAY_ACCT has no such sysctl


@contextmanager
def delay_accounting():
    """Turn delay accounting on while the block runs; put the old setting back afterwards.

    Yields a DelayAccounting: true when it is on, false when it could not be turned on (no root,
    or no CONFIG_TASK_DELAY_ACCT): then only CPU delay is meaningful, and views say so. When this
    turned it on, it says since when (processes older than that have no delays kept).
    """
    before = delay_accounting_state()
    changed = False
    since = None
    if before is False:
        try:
            DELAYACCT_SYSCTL.write_text("1\n")
            changed = True
            since = boot_ticks()  # after the write: a task forked in a later tick had its delays kept
        except OSError:
            pass
    try:
        yield DelayAccounting(bool(before or changed), since)
    finally:
        if changed:
            try:
                DELAYACCT_SYSCTL.write_text("0\n")
            except OSError:
                pass
