"""The numbers of a session, as plain tables: pure functions of a Session (dmabuf_top.session).

Aggregation runs in SQL (GROUP BY in SQLite's C code), so a million I/O events cost a
few passes, not a Python loop each. Counters come from path_samples (the in-kernel
per-path counters) when the session has them, else from io_events. Times are seconds
from the session's start (metadata started_ns).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..inventory.cgroups import short_name
from ..probes.hooks import State

# Latency buckets are log2 of microseconds: bucket n holds [2^n, 2^(n+1)) us (bucket 0 also < 1 us).


@dataclass(frozen=True)
class PathTotal:
    path: str
    calls: int
    errors: int
    bytes: int
    cpu_copied_bytes: Optional[int]  # None: the copy hooks were missing (not traced is not zero)
    pinned_bytes: Optional[int]  # None: the GUP hooks were missing
    page_cache_added_bytes: int

    @property
    def copied_fraction(self):
        """CPU-copied bytes per byte moved: 1.0 is one full copy, 0.0 zero-copy; None when not traced."""
        if self.cpu_copied_bytes is None:
            return None
        return self.cpu_copied_bytes / self.bytes if self.bytes else 0.0


@dataclass(frozen=True)
class BufferRow:
    inode: int
    exporter: str
    name: Optional[bytes]
    size: int
    max_file_refs: int
    max_attachments: int
    first_seen_s: float
    last_seen_s: float
    io_bytes: int  # bytes the traced I/O paths moved into or out of it
    # What the lifecycle probe saw (v3 sessions; from the lifecycle events in older ones). None/""/0: not seen.
    creator_pid: int = 0
    creator_comm: str = ""
    cgroup: str = ""
    created_s: Optional[float] = None  # None: made before the recording (or its creation was not seen)
    released_s: Optional[float] = None  # None: alive at the end (or its release was not seen)
    names: Tuple[bytes, ...] = ()  # every name it had, oldest first; `name` is the latest
    holders: str = ""  # "pid comm" per line
    kernel_stack_id: int = -1  # into alloc_stacks
    user_stack_id: int = -1


@dataclass(frozen=True)
class AllocStackRow:
    """Buffers grouped by where they were allocated (user and kernel stack)."""

    user_frames: Tuple[str, ...]  # innermost first; () when none was taken
    kernel_frames: Tuple[str, ...]
    buffers: int
    bytes: int
    names: Tuple[bytes, ...]  # the latest name of each named buffer, at most a few
    creators: Tuple[str, ...]  # "pid comm"


@dataclass(frozen=True)
class LatencyRow:
    path: str
    calls: int
    p50_us: float
    p99_us: float
    max_bucket: int


def _edge(session, key, aggregate):
    """metadata[key] if the recorder wrote it, else the min/max time of any row."""
    recorded = session.metadata.get(key)
    if isinstance(recorded, int):
        return recorded
    row = session.query(f"SELECT {aggregate}(t) FROM (SELECT {aggregate}(time_ns) AS t FROM buffer_snapshots "
                        f"UNION ALL SELECT {aggregate}(time_ns) FROM path_samples "
                        f"UNION ALL SELECT {aggregate}(time_ns) FROM io_events)")
    return row[0][0]


def start_ns(session):
    return _edge(session, "started_ns", "min") or 0


def end_ns(session):
    return _edge(session, "ended_ns", "max") or start_ns(session)


def first_row_s(session):
    """When the first row was recorded, in seconds from the start (sources take a while to start)."""
    first = session.query("SELECT min(t) FROM (SELECT min(time_ns) AS t FROM buffer_snapshots "
                          "UNION ALL SELECT min(time_ns) FROM path_samples "
                          "UNION ALL SELECT min(time_ns) FROM io_events "
                          "UNION ALL SELECT min(io_started_ns) FROM methods WHERE io_started_ns > 0)")
    return max(0, (first[0][0] - start_ns(session)) / 1e9) if first and first[0][0] is not None else 0.0


def duration_s(session):
    return max(0, end_ns(session) - start_ns(session)) / 1e9


def _has_rows(session, table):
    return bool(session.query(f"SELECT 1 FROM {table} LIMIT 1"))


def counter_table(session):
    """Where per-path counters come from: path_samples if recorded, else io_events."""
    return "path_samples" if _has_rows(session, "path_samples") else "io_events"


def path_totals(session) -> List[PathTotal]:
    """Per path: calls, errors, bytes moved, CPU-copied, pinned and page-cache bytes; most bytes first."""
    page = session.page_size
    if counter_table(session) == "path_samples":
        rows = session.query(
            "SELECT path, sum(calls), sum(errors), sum(bytes), sum(cpu_copied_bytes), sum(pinned_pages), "
            "sum(page_cache_added) FROM path_samples GROUP BY path")
    else:
        rows = session.query(
            "SELECT path, count(*), sum(errno != 0), sum(bytes), sum(cpu_copied_bytes), sum(pinned_pages), 0 "
            "FROM io_events GROUP BY path")
    untraced = untraced_concerns(session)
    totals = [PathTotal(path, calls, errors, moved, None if "cpu_copy" in untraced else copied,
                        None if "gup" in untraced else pinned * page, added * page)
              for path, calls, errors, moved, copied, pinned, added in rows]
    return sorted(totals, key=lambda t: (-t.bytes, t.path))


def untraced_concerns(session) -> set:
    """The concerns ("cpu_copy", "gup"...) with a hook the recording wanted but did not have (state missing)."""
    return {hook.concern for hook in session.hooks() if hook.state is State.MISSING}


def buffer_io_bytes(session) -> Dict[int, int]:
    table = counter_table(session)
    return dict(session.query(f"SELECT inode, sum(bytes) FROM {table} WHERE inode != 0 GROUP BY inode"))


def _seconds(ns, t0):
    return (ns - t0) / 1e9 if ns else None


def top_buffers(session, limit=None) -> List[BufferRow]:
    """One row per buffer ever seen, by the iterator's passes or the lifecycle probe, whatever its lifetime:
    its latest name and every earlier one, exporter, size, creator; biggest first."""
    t0 = start_ns(session)
    io = buffer_io_bytes(session)
    seen = {inode: row for inode, *row in session.query(
        "SELECT b.inode, b.exporter, b.name, b.size, agg.refs, agg.att, agg.first, agg.last FROM buffer_snapshots b "
        "JOIN (SELECT inode, max(file_refs) AS refs, max(attachments) AS att, min(time_ns) AS first, "
        "      max(time_ns) AS last, max(rowid) AS latest FROM buffer_snapshots GROUP BY inode) agg "
        "ON b.rowid = agg.latest")}
    known = {inode: row for inode, *row in session.query(
        "SELECT inode, exporter, size, name, creator_tgid, creator_comm, cgroup_path, created_ns, released_ns, "
        "holders, kernel_stack_id, user_stack_id FROM buffers")}
    history: Dict[int, List[bytes]] = {}
    for inode, name in session.query("SELECT inode, name FROM buffer_names WHERE name IS NOT NULL "
                                     "ORDER BY time_ns, rowid"):
        names = history.setdefault(inode, [])
        if not names or names[-1] != bytes(name):
            names.append(bytes(name))
    buffers = []
    for inode in seen.keys() | known.keys():
        exporter, name, size, refs, att, first, last = seen.get(inode, ("", None, 0, 0, 0, 0, 0))
        if inode in known:
            (k_exporter, k_size, k_name, tgid, comm, cgroup, created, released, holders, kstack,
             ustack) = known[inode]
            exporter, size = k_exporter or exporter, k_size or size
            name = k_name if k_name is not None else name
            first = min(t for t in (first, created) if t) if first or created else 0
            last = max(last, released)
        else:
            tgid, comm, cgroup, created, released, holders, kstack, ustack = 0, "", "", 0, 0, "", -1, -1
        name = bytes(name) if name is not None else None
        buffers.append(BufferRow(inode, exporter, name, size, refs, att, (first - t0) / 1e9 if first else 0.0,
                                 (last - t0) / 1e9 if last else 0.0, io.get(inode, 0), tgid, comm, cgroup,
                                 _seconds(created, t0), _seconds(released, t0),
                                 tuple(history.get(inode, [name] if name is not None else [])), holders, kstack,
                                 ustack))
    buffers.sort(key=lambda b: (-b.size, -b.io_bytes, b.inode))
    return buffers[:limit] if limit else buffers


def alloc_stacks(session) -> Dict[int, Tuple[str, Tuple[str, ...]]]:
    """{alloc stack id: (kind, frames innermost first)}."""
    return {stack_id: (kind, tuple(frames.split("\n")) if frames else ())
            for stack_id, kind, frames in session.query("SELECT id, kind, frames FROM alloc_stacks")}


def allocation_stacks(session, buffers=None) -> List[AllocStackRow]:
    """The buffers the lifecycle probe saw created, grouped by allocation stack (user, kernel); most bytes first."""
    stacks = alloc_stacks(session)
    groups: Dict[Tuple[int, int], List[BufferRow]] = {}
    for buffer in buffers if buffers is not None else top_buffers(session):
        if buffer.created_s is not None and (buffer.user_stack_id >= 0 or buffer.kernel_stack_id >= 0):
            groups.setdefault((buffer.user_stack_id, buffer.kernel_stack_id), []).append(buffer)
    rows = []
    for (user, kernel), members in groups.items():
        rows.append(AllocStackRow(stacks.get(user, ("", ()))[1], stacks.get(kernel, ("", ()))[1], len(members),
                                  sum(b.size for b in members),
                                  tuple(b.name for b in members if b.name is not None)[:8],
                                  tuple(sorted({f"{b.creator_pid} {b.creator_comm}" for b in members}))[:8]))
    rows.sort(key=lambda r: (-r.bytes, -r.buffers, r.user_frames, r.kernel_frames))
    return rows


LEAK_MIN_AGE_S = 10.0  # the report's leaks: alive at the session's end, or alive at least this long


@dataclass(frozen=True)
class LeakRow:
    """The session's leak suspects of one allocation stack: buffers alive at its end or for LEAK_MIN_AGE_S.
    Frames () with stack_known False: buffers made before the recording (or whose creation it missed)."""

    user_frames: Tuple[str, ...]
    kernel_frames: Tuple[str, ...]
    stack_known: bool
    buffers: Tuple[BufferRow, ...]  # oldest first
    alive_at_end: int  # how many of them
    lifetimes_s: Tuple[float, ...]  # each buffer's, in buffers' order: at least this long when alive at the end

    @property
    def bytes(self) -> int:
        return sum(buffer.size for buffer in self.buffers)


def leak_groups(session, buffers=None, min_age_s=LEAK_MIN_AGE_S) -> List[LeakRow]:
    """Buffers still alive at the session's end, or alive at least min_age_s, grouped by allocation stack
    (buffers without one: one group); most bytes first. Alive at the end: the lifecycle probe saw it created and
    not released; a buffer the iterator passes alone knew (made before the recording), when in the last pass."""
    stacks = alloc_stacks(session)
    t0, end = start_ns(session), end_ns(session)
    end_s = (end - t0) / 1e9 if end and t0 else 0.0
    last_pass = session.query("SELECT max(time_ns) FROM buffer_snapshots")[0][0]
    last_pass_s = (last_pass - t0) / 1e9 if last_pass else None
    groups: Dict[Tuple, List[Tuple[BufferRow, bool, float]]] = {}
    for buffer in buffers if buffers is not None else top_buffers(session):
        born = buffer.created_s if buffer.created_s is not None else buffer.first_seen_s
        if buffer.released_s is not None:
            alive_at_end, lifetime = False, buffer.released_s - born
        else:
            alive_at_end = (buffer.created_s is not None or last_pass_s is None or
                            buffer.last_seen_s >= last_pass_s - 1e-9)
            lifetime = (end_s if alive_at_end else buffer.last_seen_s) - born
        if not alive_at_end and lifetime < min_age_s:
            continue
        known = buffer.created_s is not None and (buffer.user_stack_id >= 0 or buffer.kernel_stack_id >= 0)
        key = (buffer.user_stack_id, buffer.kernel_stack_id) if known else None
        groups.setdefault(key, []).append((buffer, alive_at_end, max(lifetime, 0.0)))
    rows = []
    for key, members in groups.items():
        members.sort(key=lambda member: (-member[2], member[0].inode))
        user, kernel = key if key is not None else (-1, -1)
        rows.append(LeakRow(stacks.get(user, ("", ()))[1], stacks.get(kernel, ("", ()))[1], key is not None,
                            tuple(m[0] for m in members), sum(m[1] for m in members), tuple(m[2] for m in members)))
    rows.sort(key=lambda r: (-r.bytes, -len(r.buffers), not r.stack_known, r.user_frames, r.kernel_frames))
    return rows


def _bin_ns(session, bins):
    return max(1, int((end_ns(session) - start_ns(session)) / bins) or 1)


def sample_interval_ns(session):
    """The recorder's counter cadence (metadata interval_s), or 0 when the session does not say."""
    interval = session.metadata.get("interval_s")
    return int(interval * 1e9) if isinstance(interval, (int, float)) and interval > 0 else 0


# A path_samples row counts what happened in the interval that ends at its time_ns. In a recording that
# is the sampling interval, and a bin is never narrower. A validate method's rows cover its I/O window
# (methods: io_started_ns to io_ended_ns, the row at its end, inode = its buffer), which spans many bins.
WINDOW_OF_ROW = ("m.buffer_inode = p.inode AND m.io_ended_ns = p.time_ns "
                 "AND 0 < m.io_started_ns AND m.io_started_ns < m.io_ended_ns")


def _window_bytes(session, key, where, t0, width):
    """{(key, bin): bytes} of the rows that cover a method's I/O window, each spread over the bins of the
    window in proportion to the time it spends in them: the method's measured average rate, drawn as such.
    Integer shares of a running total: they add up to the bytes measured, exactly."""
    binned: Dict[Tuple[object, int], int] = {}
    for name, start, end, moved in session.iterate(
            f"SELECT p.{key}, m.io_started_ns, m.io_ended_ns, p.bytes FROM path_samples p "
            f"JOIN methods m ON {WINDOW_OF_ROW} {where}"):
        span = end - start
        for slot in range((start - t0) // width, (end - 1 - t0) // width + 1):
            low, high = max(start, t0 + slot * width), min(end, t0 + (slot + 1) * width)
            share = moved * (high - start) // span - moved * (low - start) // span
            if share:
                binned[(name, slot)] = binned.get((name, slot), 0) + share
    return binned


def throughput_series(session, by="path", bins=100) -> Tuple[float, Dict[object, List[Tuple[float, float]]]]:
    """(bin width in s, {path or inode: [(t_s, bytes per second)]}) over at most `bins` equal bins.

    Only bins that moved bytes are listed. A bin is never narrower than the interval of the
    counter samples: narrower bins would alternate between a whole interval's bytes and none.
    Rows that cover a validate method's I/O window are drawn at its average rate across it.
    """
    table = counter_table(session)
    t0, width = start_ns(session), _bin_ns(session, bins)
    key = "path" if by == "path" else "inode"
    where = "" if by == "path" else "WHERE p.inode != 0"
    binned: Dict[Tuple[object, int], int] = {}
    if table == "path_samples":
        width = max(width, sample_interval_ns(session))
        binned = _window_bytes(session, key, where, t0, width)
        points = (f"SELECT p.{key}, (p.time_ns - ?) / ?, sum(p.bytes) FROM path_samples p "
                  f"{where or 'WHERE 1'} AND NOT EXISTS (SELECT 1 FROM methods m WHERE {WINDOW_OF_ROW}) "
                  "GROUP BY 1, 2")
    else:
        points = (f"SELECT p.{key}, (p.time_ns - ?) / ?, sum(p.bytes) FROM io_events p {where} "
                  "GROUP BY 1, 2")
    for name, slot, moved in session.iterate(points, (t0, width)):
        binned[(name, slot)] = binned.get((name, slot), 0) + moved
    series: Dict[object, List[Tuple[float, float]]] = {}
    for (name, slot), moved in sorted(binned.items()):
        if moved:
            series.setdefault(name, []).append(((slot + 0.5) * width / 1e9, moved / (width / 1e9)))
    return width / 1e9, series


def log2_bucket(duration_ns):
    """The latency bucket of a duration: floor(log2(microseconds)), 0 below 2 us."""
    micros = int(duration_ns) // 1000
    return max(0, micros.bit_length() - 1)


def latency_histograms(session) -> Dict[str, Dict[int, int]]:
    """{path: {bucket: count}} from the in-kernel histograms, else bucketed from io_events."""
    hist: Dict[str, Dict[int, int]] = {}
    if _has_rows(session, "latency_hist"):
        rows = session.query("SELECT path, bucket, sum(count) FROM latency_hist GROUP BY path, bucket")
    else:
        session.db.create_function("log2_bucket", 1, log2_bucket, deterministic=True)
        rows = session.query("SELECT path, log2_bucket(duration_ns), count(*) FROM io_events GROUP BY 1, 2")
    for path, bucket, count in rows:
        if count:
            hist.setdefault(path, {})[bucket] = count
    return hist


def percentile(histogram: Dict[int, int], fraction: float) -> float:
    """The `fraction` quantile in microseconds of a log2 histogram, interpolated inside its bucket.

    Bucket n spans [2^n, 2^(n+1)) us, bucket 0 spans [0, 2) us; within a bucket calls are taken
    as evenly spread. An empty histogram gives 0.
    """
    total = sum(histogram.values())
    if total == 0:
        return 0.0
    rank = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        if count and seen + count >= rank:
            low = 0.0 if bucket == 0 else float(2 ** bucket)
            high = float(2 ** (bucket + 1))
            return low + (high - low) * (rank - seen) / count
        seen += count
    last = max(histogram)
    return float(2 ** (last + 1))


def latency_table(session) -> List[LatencyRow]:
    rows = []
    for path, hist in sorted(latency_histograms(session).items()):
        rows.append(LatencyRow(path, sum(hist.values()), percentile(hist, 0.5), percentile(hist, 0.99), max(hist)))
    return rows


def buffers_over_time(session) -> Dict[str, List[Tuple[float, int, int]]]:
    """{exporter: [(t_s, buffers, bytes)]} per inventory pass."""
    t0 = start_ns(session)
    series: Dict[str, List[Tuple[float, int, int]]] = {}
    times = {t for (t,) in session.query("SELECT DISTINCT time_ns FROM buffer_snapshots")}
    # Passes that listed none of the recorded buffers have no row; a session may name them (validate does).
    passes = session.metadata.get("inventory_passes_ns")
    times = sorted(times | set(passes if isinstance(passes, list) and times else ()))
    exporters = [e for (e,) in session.query("SELECT DISTINCT exporter FROM buffer_snapshots ORDER BY exporter")]
    counts = {(t, e): (n, s) for t, e, n, s in session.query(
        "SELECT time_ns, exporter, count(*), sum(size) FROM buffer_snapshots GROUP BY 1, 2")}
    for exporter in exporters:
        # A pass that saw none of this exporter's buffers is a zero, not a gap.
        series[exporter] = [((t - t0) / 1e9, *counts.get((t, exporter), (0, 0))) for t in times]
    return series


@dataclass(frozen=True)
class CgroupRow:
    """One cgroup (or the "unknown" / "kernel-only" row) over a recording: its bytes at the peak and at the last
    sample (a buffer held from two cgroups is in both rows: inventory/cgroup_totals.py)."""

    kind: str
    cgroup: Optional[bytes]
    short: str
    peak_held_bytes: int
    peak_s: float
    last_held_bytes: int
    peak_shared_bytes: int
    peak_processes: int
    peak_buffers: int


def _has_table(session, table):
    return bool(session.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))


def cgroup_table(session) -> List[CgroupRow]:
    """Per-cgroup dma-buf bytes of the holders, peak first; [] for a session recorded without them."""
    if not _has_table(session, "cgroup_samples"):
        return []
    t0 = start_ns(session)
    last = session.query("SELECT max(time_ns) FROM cgroup_samples")[0][0]
    rows = []
    for kind, cgroup, peak, peak_ns, shared, processes, buffers, last_held in session.query(
            "SELECT kind, cgroup, max(held_bytes), (SELECT s.time_ns FROM cgroup_samples s WHERE s.kind = c.kind "
            "AND s.cgroup IS c.cgroup ORDER BY s.held_bytes DESC, s.time_ns LIMIT 1), max(shared_bytes), "
            "max(processes), max(buffers), sum(CASE WHEN time_ns = ? THEN held_bytes ELSE 0 END) "
            "FROM cgroup_samples c GROUP BY kind, cgroup", (last,)):
        cgroup = None if cgroup is None else bytes(cgroup)
        short = {"unknown": "unknown cgroup", "kernel-only": "kernel-only"}.get(kind) or short_name(cgroup)
        rows.append(CgroupRow(kind, cgroup, short, peak, (peak_ns - t0) / 1e9, last_held, shared, processes,
                              buffers))
    rows.sort(key=lambda row: (-row.peak_held_bytes, row.kind, row.cgroup or b""))
    return rows


def missing_hooks(session) -> List[Tuple[str, str]]:
    """(name, why) for each hook the recording wanted but could not attach (not those it did not need: a
    fallback whose primary was live, a path the kernel lacks), and each kernel feature dmabuf-top traces
    through that this kernel refused."""
    missing = [(hook.name, hook.detail or "not attached") for hook in session.hooks() if hook.state is State.MISSING]
    named = {name for name, _ in missing}
    for name, (available, _via, detail) in session.features().items():
        if not available and name not in named and name.startswith(("fn/", "tracepoint/", "iter/")):
            missing.append((name, detail or "unavailable"))
    return sorted(missing)


def live_hooks(session) -> List[Tuple[str, str]]:
    return [(hook.name, hook.via) for hook in session.hooks() if hook.live]


def dropped_events(session) -> Dict[str, int]:
    return dict(session.query("SELECT source, sum(count) FROM drops GROUP BY source ORDER BY source"))


def summary(session) -> Dict[str, object]:
    meta = session.metadata
    kernel = meta.get("kernel") or {}
    totals = path_totals(session)
    io_events = session.query("SELECT count(*) FROM io_events")[0][0]
    return {
        "command": meta.get("command"),
        "exit_code": session.exit_code,
        "end_reason": session.end_reason,
        "started": meta.get("started_wall"),
        "duration_s": duration_s(session),
        "kernel": kernel.get("release") if isinstance(kernel, dict) else kernel,
        # Every buffer, however short-lived: the iterator's passes and the lifecycle probe's (buffers).
        "buffers_seen": session.query("SELECT count(*) FROM (SELECT inode FROM buffer_snapshots UNION "
                                      "SELECT inode FROM buffers WHERE inode != 0)")[0][0],
        # None: the session keeps no per-call events (validate keeps per-method totals), not "none happened".
        "io_events": None if meta.get("per_call_events") is False else io_events,
        "calls": sum(t.calls for t in totals),
        "bytes_moved": sum(t.bytes for t in totals),
        "dropped_events": sum(dropped_events(session).values()),
    }
