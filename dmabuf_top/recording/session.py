"""The session file: one SQLite database per `dmabuf-top record`, read by `report`, `flame` and exports.

The schema is documented in docs/session-schema.md; SCHEMA below is its source of truth.
A session is recognised by `PRAGMA application_id` (APPLICATION_ID, "dmbt") and its
schema by `PRAGMA user_version` (SCHEMA_VERSION). Readers refuse, with one sentence, a
file that is not SQLite, an SQLite file of another application, another schema
version, or a truncated or damaged file.

Writing: `SessionWriter` buffers rows and commits them in one transaction every
`batch_rows` rows or `batch_seconds` seconds, with a rollback journal (not WAL), so
the session is one file and a writer killed by SIGKILL leaves every committed
transaction readable (the next reader rolls the unfinished one back). A full disk
(SQLITE_FULL / ENOSPC) ends the session: the unsaved batch is dropped, the end reason
is written in place without a journal, and `SessionWriter.disk_full` says so.
Files are created mode 0600: they hold command lines.

Records are NamedTuples; each class names its table in TABLE_OF. Times are
CLOCK_MONOTONIC nanoseconds (what bpf_ktime_get_ns gives); metadata `started_ns`
and `started_wall` tie them to the wall clock.
"""
import json
import os
import sqlite3
import struct
import time
from typing import Dict, Iterable, NamedTuple, Optional
from urllib.parse import quote

from ..errors import DmabufTopError
from ..probes.hooks import SYSCALLS, State

APPLICATION_ID = 0x646D6274  # "dmbt"
SCHEMA_VERSION = 3
# v1: hooks without concern and state (Session.hooks reads them the old way), validate runs as a metadata
# blob (read_v1_validate). v1 and v2: no buffers, buffer_names or alloc_stacks tables (read_v2_buffers makes
# them from the snapshots and lifecycle events).
OLDEST_READABLE_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"


def _one_line(error):
    """SQLite quotes the damaged schema text, newlines included: keep the error on one line."""
    return " ".join(str(error).split())[:200]


class SessionError(DmabufTopError):
    """A session file that cannot be read or written; the message says which and what to do."""

    exit_code = 6


# --------------------------------------------------------------------------------------------
# Records (one per table row). Field order is column order.


class BufferSnapshot(NamedTuple):
    """One buffer as seen by one inventory pass at time_ns."""

    time_ns: int
    inode: int
    exporter: str
    name: Optional[bytes]  # raw bytes, hostile; None: never named
    size: int
    file_refs: int
    attachments: int
    backing_inode: int = 0  # udmabuf: the memfd behind it


class CgroupSample(NamedTuple):
    """dma-buf bytes per cgroup of the holders at time_ns (inventory/cgroup_totals.py has the rules)."""

    time_ns: int
    kind: str  # cgroup, unknown (holders whose cgroup could not be read), kernel-only (no process holds them)
    cgroup: Optional[bytes]  # the cgroup v2 path, raw bytes (hostile); None for the unknown and kernel-only rows
    processes: int
    buffers: int
    held_bytes: int  # a buffer held from two cgroups counts in both...
    shared_bytes: int  # ...and in both of these


class LifecycleEvent(NamedTuple):
    time_ns: int
    inode: int
    event: str  # export, fd, get, put, mmap, mmap_internal, attach, detach, release
    tgid: int
    comm: str
    size: int
    fd: int = -1


class BufferRecord(NamedTuple):
    """Every dma-buf the recording saw, whatever its lifetime: one row per buffer, rewritten as it learns more.

    Known from the lifecycle probe (creation, naming, release) and the iterator's snapshots; 0, "" or None
    where nothing said (a buffer created before the recording has no creator, no created_ns, no stacks)."""

    inode: int
    exporter: str
    size: int
    name: Optional[bytes]  # the latest name (raw bytes, hostile); the history is in buffer_names
    creator_tgid: int
    creator_tid: int
    creator_comm: str
    cgroup_id: int
    cgroup_path: str  # the creator's cgroup (v2) path, when it could be resolved
    created_ns: int  # 0: created before the recording (or not seen)
    released_ns: int  # 0: alive at the end (or its release not seen)
    kernel_stack_id: int  # into alloc_stacks; -1: none
    user_stack_id: int
    holders: str  # the processes seen holding or using it: "tgid comm" per line


class BufferName(NamedTuple):
    """A name a buffer had at time_ns, and where it was seen (export, name: DMA_BUF_SET_NAME, release,
    snapshot: an iterator pass)."""

    time_ns: int
    inode: int
    name: Optional[bytes]
    source: str
    tgid: int = 0


class AllocStack(NamedTuple):
    """A buffer's allocation stack, symbolized: kernel or user frames, innermost (leaf) first, one per line."""

    id: int
    kind: str  # kernel, user
    frames: str


class PathSample(NamedTuple):
    """Counters of one I/O path over the interval that ends at time_ns (deltas, not running totals)."""

    time_ns: int
    inode: int  # the buffer (or memory file) the bytes went to or came from; 0: not attributed
    tgid: int  # 0: all processes
    path: str  # read, write, copy_file_range, sendfile, splice, direct_io, ...
    bytes: int
    cpu_copied_bytes: int = 0
    pinned_pages: int = 0
    page_cache_added: int = 0
    calls: int = 0
    errors: int = 0


class IoEvent(NamedTuple):
    """One traced I/O call."""

    time_ns: int  # when it ended
    duration_ns: int
    tgid: int
    tid: int
    comm: str
    path: str
    inode: int  # buffer inode, 0 when the memory is not a known buffer
    bytes: int  # bytes moved (the call's positive return value)
    errno: int = 0  # 0 or the positive errno it failed with
    stack_id: int = -1  # into stacks, -1 when none was taken
    cpu_copied_bytes: int = 0
    pinned_pages: int = 0


class Stack(NamedTuple):
    id: int
    frames: str  # kernel frames, innermost (leaf) first, one per line ("\n")


class StackCount(NamedTuple):
    """How often (hits) and how much (amount: bytes copied or pages pinned) a stack was seen at a point."""

    stack_id: int
    point: str  # copy_read, copy_write, gup
    path: str
    hits: int
    amount: int


class LatencyBucket(NamedTuple):
    """count calls of path lasted [2^bucket, 2^(bucket+1)) microseconds (bucket 0 also < 1 us); rows add up."""

    path: str
    bucket: int
    count: int


class TaskstatsSample(NamedTuple):
    time_ns: int
    tgid: int
    pid: int
    comm: str
    cpu_run_real_ns: int = 0
    cpu_delay_ns: int = 0
    blkio_delay_ns: int = 0
    swapin_delay_ns: int = 0
    freepages_delay_ns: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    read_syscalls: int = 0
    write_syscalls: int = 0


class Drop(NamedTuple):
    """count records lost by source (a ring buffer full, a map full) up to time_ns; rows add up."""

    time_ns: int
    source: str
    count: int


class Hook(NamedTuple):
    """A hook this recording tried: what it counts, its state (live, missing: not traced, or not needed),
    how it was attached, and what it hooks and why it is not live."""

    name: str
    concern: str  # what it counts (probes/hooks.py HookPoint.concern, "taskstats", "buffers"...)
    state: State  # stored as its value: "live", "missing", "not needed"
    via: str
    detail: str

    @property
    def live(self):
        return self.state is State.LIVE


class Method(NamedTuple):
    """One method of a `dmabuf-top validate` run: its times, what it measured, and the verdict.

    Counters are None (NULL) where nothing was measured: the method never reached its I/O, or the
    hooks that count them were missing. Its per-path counters are path_samples rows at io_ended_ns
    with inode = buffer_inode: their interval is the method's I/O window, io_started_ns to io_ended_ns.
    """

    name: str
    summary: str
    buffer: str  # heap, udmabuf, memfd, or command (a user's command traced)
    direct: bool  # the file was opened O_DIRECT
    file: Optional[str]  # the file loaded; None for a command
    filesystem: Optional[str]
    page_cache: str  # "warm", or "dropped" before the method
    payload: int  # bytes the method had to load
    buffer_inode: int  # the buffer it loaded into (a dma-buf or a memfd); 0: none
    started_ns: int  # CLOCK_MONOTONIC: the allocation began; 0 for each time that did not happen
    io_started_ns: int
    io_ended_ns: int
    closed_ns: int
    alloc_ms: Optional[float]
    io_ms: Optional[float]
    close_ms: Optional[float]
    moved: Optional[int]  # bytes the method's calls returned
    reached: Optional[int]  # bytes the tracer saw reach memory (a dma-buf or a memfd)
    cpu_copied: Optional[int]  # bytes
    page_cache_pages: Optional[int]
    pinned_pages: Optional[int]
    got_pages: Optional[int]
    calls: Optional[int]
    errors: Optional[int]
    errno: Optional[int]  # positive errno the method failed with
    checksum: Optional[str]  # "ok", "mismatch", or None (not checked)
    verdict: str  # zero-copy, copies, failed, wrong-data, incomplete, unmeasured, absent
    verdict_label: str
    verdict_copies: Optional[float]  # CPU-copied bytes / payload, when measured
    verdict_reasons: str  # one per line
    notes: str  # one per line
    # DMA evidence (NULL: not measured, as in every v1 session): what the storage device wrote for the
    # method's reads, and of that, what it wrote into the buffer's own page frames.
    device_bytes: Optional[int] = None
    device_to_buffer: Optional[int] = None


class MethodFlow(NamedTuple):
    """One kind of call a method made (path, both ends, error) and the bytes it moved in its I/O window."""

    method: str
    path: str
    src_kind: str
    dst_kind: str
    src_fs: str
    dst_fs: str
    bytes: int
    calls: int
    error: int  # 0 or a negative errno


TABLE_OF = {
    BufferSnapshot: "buffer_snapshots",
    CgroupSample: "cgroup_samples",
    LifecycleEvent: "lifecycle_events",
    BufferRecord: "buffers",
    BufferName: "buffer_names",
    AllocStack: "alloc_stacks",
    PathSample: "path_samples",
    IoEvent: "io_events",
    Stack: "stacks",
    StackCount: "stack_counts",
    LatencyBucket: "latency_hist",
    TaskstatsSample: "taskstats",
    Drop: "drops",
    Hook: "hooks",
    Method: "methods",
    MethodFlow: "method_flows",
}

SCHEMA = """
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);  -- value: JSON
CREATE TABLE features (name TEXT PRIMARY KEY, available INTEGER NOT NULL, via TEXT, detail TEXT);
CREATE TABLE hooks (name TEXT PRIMARY KEY, concern TEXT NOT NULL, state TEXT NOT NULL, via TEXT, detail TEXT);
CREATE TABLE drops (time_ns INTEGER NOT NULL, source TEXT NOT NULL, count INTEGER NOT NULL);
CREATE TABLE buffer_snapshots (
    time_ns INTEGER NOT NULL, inode INTEGER NOT NULL, exporter TEXT NOT NULL, name BLOB,
    size INTEGER NOT NULL, file_refs INTEGER NOT NULL, attachments INTEGER NOT NULL,
    backing_inode INTEGER NOT NULL DEFAULT 0);
CREATE TABLE cgroup_samples (
    time_ns INTEGER NOT NULL, kind TEXT NOT NULL, cgroup BLOB, processes INTEGER NOT NULL,
    buffers INTEGER NOT NULL, held_bytes INTEGER NOT NULL, shared_bytes INTEGER NOT NULL);
CREATE TABLE lifecycle_events (
    time_ns INTEGER NOT NULL, inode INTEGER NOT NULL, event TEXT NOT NULL, tgid INTEGER NOT NULL,
    comm TEXT NOT NULL, size INTEGER NOT NULL, fd INTEGER NOT NULL DEFAULT -1);
CREATE TABLE buffers (
    inode INTEGER PRIMARY KEY, exporter TEXT NOT NULL, size INTEGER NOT NULL, name BLOB,
    creator_tgid INTEGER NOT NULL, creator_tid INTEGER NOT NULL, creator_comm TEXT NOT NULL,
    cgroup_id INTEGER NOT NULL, cgroup_path TEXT NOT NULL, created_ns INTEGER NOT NULL, released_ns INTEGER NOT NULL,
    kernel_stack_id INTEGER NOT NULL, user_stack_id INTEGER NOT NULL, holders TEXT NOT NULL);
CREATE TABLE buffer_names (
    time_ns INTEGER NOT NULL, inode INTEGER NOT NULL, name BLOB, source TEXT NOT NULL, tgid INTEGER NOT NULL);
CREATE TABLE alloc_stacks (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, frames TEXT NOT NULL);
CREATE TABLE path_samples (
    time_ns INTEGER NOT NULL, inode INTEGER NOT NULL, tgid INTEGER NOT NULL, path TEXT NOT NULL,
    bytes INTEGER NOT NULL, cpu_copied_bytes INTEGER NOT NULL, pinned_pages INTEGER NOT NULL,
    page_cache_added INTEGER NOT NULL, calls INTEGER NOT NULL, errors INTEGER NOT NULL);
CREATE TABLE io_events (
    time_ns INTEGER NOT NULL, duration_ns INTEGER NOT NULL, tgid INTEGER NOT NULL, tid INTEGER NOT NULL,
    comm TEXT NOT NULL, path TEXT NOT NULL, inode INTEGER NOT NULL, bytes INTEGER NOT NULL,
    errno INTEGER NOT NULL, stack_id INTEGER NOT NULL, cpu_copied_bytes INTEGER NOT NULL,
    pinned_pages INTEGER NOT NULL);
CREATE TABLE stacks (id INTEGER PRIMARY KEY, frames TEXT NOT NULL);
CREATE TABLE stack_counts (
    stack_id INTEGER NOT NULL, point TEXT NOT NULL, path TEXT NOT NULL, hits INTEGER NOT NULL,
    amount INTEGER NOT NULL);
CREATE TABLE latency_hist (path TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE TABLE taskstats (
    time_ns INTEGER NOT NULL, tgid INTEGER NOT NULL, pid INTEGER NOT NULL, comm TEXT NOT NULL,
    cpu_run_real_ns INTEGER NOT NULL, cpu_delay_ns INTEGER NOT NULL, blkio_delay_ns INTEGER NOT NULL,
    swapin_delay_ns INTEGER NOT NULL, freepages_delay_ns INTEGER NOT NULL, read_bytes INTEGER NOT NULL,
    write_bytes INTEGER NOT NULL, read_syscalls INTEGER NOT NULL, write_syscalls INTEGER NOT NULL);
"""

# Tables whose rows are rewritten by key as the recording learns more (a buffer's release, a hook's state).
REPLACED_TABLES = ("stacks", "hooks", "buffers", "alloc_stacks")

# The tables of a `validate` run (v2); read_v1_validate builds them as TEMP tables for a v1 session.
METHOD_TABLES = """
CREATE TABLE methods (
    name TEXT PRIMARY KEY, summary TEXT NOT NULL, buffer TEXT NOT NULL, direct INTEGER NOT NULL, file TEXT,
    filesystem TEXT, page_cache TEXT NOT NULL, payload INTEGER NOT NULL, buffer_inode INTEGER NOT NULL,
    started_ns INTEGER NOT NULL, io_started_ns INTEGER NOT NULL, io_ended_ns INTEGER NOT NULL,
    closed_ns INTEGER NOT NULL, alloc_ms REAL, io_ms REAL, close_ms REAL, moved INTEGER, reached INTEGER,
    cpu_copied INTEGER, page_cache_pages INTEGER, pinned_pages INTEGER, got_pages INTEGER, calls INTEGER,
    errors INTEGER, errno INTEGER, checksum TEXT, verdict TEXT NOT NULL, verdict_label TEXT NOT NULL,
    verdict_copies REAL, verdict_reasons TEXT NOT NULL, notes TEXT NOT NULL, device_bytes INTEGER,
    device_to_buffer INTEGER);
CREATE TABLE method_flows (
    method TEXT NOT NULL, path TEXT NOT NULL, src_kind TEXT NOT NULL, dst_kind TEXT NOT NULL, src_fs TEXT NOT NULL,
    dst_fs TEXT NOT NULL, bytes INTEGER NOT NULL, calls INTEGER NOT NULL, error INTEGER NOT NULL);
"""
SCHEMA += METHOD_TABLES

# Written at creation with fixed-width placeholders, so the end can be recorded in place
# even when the disk is full (see SessionWriter._record_end).
END_KEYS = ("end_reason", "ended_ns", "exit_code")
END_PLACEHOLDER = json.dumps(" " * 120)

RUNNING = "running"

SQLITE_FULL_MESSAGES = ("database or disk is full",)


def _is_disk_full(error):
    return isinstance(error, sqlite3.OperationalError) and any(
        text in str(error).lower() for text in SQLITE_FULL_MESSAGES)


class SessionWriter:
    """Appends records to a new session file in batched transactions.

    add(record) queues a row; a batch commits when it holds batch_rows rows or when
    batch_seconds have passed since the last commit (checked on add and tick()).
    close(reason, exit_code) commits what is left and records how the session ended.
    """

    def __init__(self, path, *, overwrite=False, batch_rows=10000, batch_seconds=1.0, clock=time.monotonic):
        self.path = os.fspath(path)
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self._clock = clock
        self._pending: Dict[str, list] = {}
        self._pending_count = 0
        self._last_commit = clock()
        self.rows_committed = 0
        self.rows_lost = 0
        self.disk_full = False
        self.closed = False
        self._create(overwrite)

    # -- creation ---------------------------------------------------------------------------

    def _create(self, overwrite):
        if os.path.exists(self.path) and not overwrite:
            raise SessionError(f"{self.path} already exists: choose another name or pass --force to replace it")
        for suffix in ("", "-journal"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                raise SessionError(f"{self.path} is a directory: give a file name for the session") from None
            except OSError as error:
                raise SessionError(f"cannot create {self.path}: {error.strerror}") from None
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as error:
            raise SessionError(f"cannot create {self.path}: {error.strerror}") from None
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN")
            self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            now = self._clock()
            self._db.executemany("INSERT INTO metadata VALUES (?, ?)", [
                ("format", json.dumps("dmabuf-top session")),
                ("started_ns", json.dumps(time.monotonic_ns())),
                ("started_wall", json.dumps(time.strftime("%Y-%m-%dT%H:%M:%S%z"))),
                ("page_size", json.dumps(os.sysconf("SC_PAGE_SIZE"))),
            ] + [(key, END_PLACEHOLDER) for key in END_KEYS])
            self._db.execute("UPDATE metadata SET value=? WHERE key='end_reason'", (self._padded(RUNNING),))
            self._db.execute("COMMIT")
            self._last_commit = now
        except sqlite3.Error as error:
            self._db.close()
            if _is_disk_full(error):
                raise SessionError(f"cannot create {self.path}: the disk is full") from None
            raise SessionError(f"cannot create {self.path}: {error}") from None

    @staticmethod
    def _padded(value):
        text = json.dumps(value)
        # Same length as the placeholder: the row is rewritten in place, no page grows.
        return text + " " * max(0, len(END_PLACEHOLDER) - len(text))

    # -- metadata ---------------------------------------------------------------------------

    def set_metadata(self, **values):
        """Small JSON values (argv, command, kernel, interval...): committed at once."""
        self._write_now("INSERT OR REPLACE INTO metadata VALUES (?, ?)",
                        [(key, json.dumps(value)) for key, value in values.items()])

    def set_features(self, report):
        """A FeatureReport (dmabuf_top.features) or its to_dict(): what this kernel offered."""
        data = report if isinstance(report, dict) else report.to_dict()
        rows = [(name, int(bool(f["available"])), f.get("via"), f.get("detail", ""))
                for name, f in data.get("features", {}).items()]
        self._write_now("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)
        if "kernel" in data:
            self.set_metadata(kernel=data["kernel"])

    def _write_now(self, sql, rows):
        self.flush()
        if self.disk_full or self.closed:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            self._failed(error, len(rows))

    # -- rows -------------------------------------------------------------------------------

    def add(self, record):
        self._pending.setdefault(TABLE_OF[type(record)], []).append(record)
        self._pending_count += 1
        if self._pending_count >= self.batch_rows:
            self.flush()
        elif self._pending_count % 256 == 0:
            self.tick()

    def add_all(self, records: Iterable):
        for record in records:
            self.add(record)
        self.tick()

    def tick(self):
        """Commits the batch if batch_seconds have passed; call it from a polling loop."""
        if self._pending_count and self._clock() - self._last_commit >= self.batch_seconds:
            self.flush()

    def flush(self):
        if not self._pending_count or self.disk_full or self.closed:
            self._last_commit = self._clock()
            return
        pending, count = self._pending, self._pending_count
        self._pending, self._pending_count = {}, 0
        try:
            self._db.execute("BEGIN")
            for table, rows in pending.items():
                placeholders = ",".join("?" * len(rows[0]))
                verb = "INSERT OR REPLACE" if table in REPLACED_TABLES else "INSERT"
                self._db.executemany(f"{verb} INTO {table} VALUES ({placeholders})", rows)
            self._db.execute("COMMIT")
            self.rows_committed += count
        except sqlite3.Error as error:
            self._failed(error, count)
        self._last_commit = self._clock()

    def _failed(self, error, count):
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self.rows_lost += count
        if _is_disk_full(error):
            self.disk_full = True
            return
        raise SessionError(f"writing {self.path} failed: {error}") from None

    # -- the end ----------------------------------------------------------------------------

    def close(self, reason="completed", exit_code=None, ended_ns=None):
        """Commits what is left and records why the session ended; returns the reason recorded.

        ended_ns defaults to now (CLOCK_MONOTONIC)."""
        if self.closed:
            return reason
        self.flush()
        if self.disk_full:
            reason = f"disk full ({self.rows_lost} rows not saved)"
        self._record_end(reason, exit_code, time.monotonic_ns() if ended_ns is None else ended_ns)
        self.closed = True
        self._db.close()
        return reason

    def _record_end(self, reason, exit_code, ended_ns):
        values = {"end_reason": reason[:100], "ended_ns": ended_ns, "exit_code": exit_code}
        rows = [(self._padded(value), key) for key, value in values.items()]
        try:
            if self.disk_full:
                # No room for a journal: rewrite the fixed-width rows in place, unjournaled.
                self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE metadata SET value=? WHERE key=?", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close("completed")
        else:
            self.close(f"error: {exc_type.__name__}")


# --------------------------------------------------------------------------------------------
# Reading


def _header_facts(path):
    """(page_size, page_count or None) from the SQLite header, or raise SessionError."""
    try:
        with open(path, "rb") as file:
            header = file.read(100)
    except FileNotFoundError:
        raise SessionError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SessionError(f"{path} is a directory, not a session file") from None
    except OSError as error:
        raise SessionError(f"cannot read {path}: {error.strerror}") from None
    if len(header) == 0:
        raise SessionError(f"{path} is empty: not a dmabuf-top session (was the recording stopped before it began?)")
    if not header.startswith(SQLITE_MAGIC[: len(header)]) or len(header) < 100:
        if header.startswith(SQLITE_MAGIC[: min(len(header), 16)]):
            raise SessionError(f"{path} is truncated ({len(header)} bytes): copy the whole file, or record again")
        raise SessionError(f"{path} is not a dmabuf-top session (not an SQLite file)")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change_counter, page_count, valid_for = struct.unpack(">I", header[24:28])[0], \
        struct.unpack(">I", header[28:32])[0], struct.unpack(">I", header[92:96])[0]
    return page_size, (page_count if page_count and change_counter == valid_for else None)


class Session:
    """A session file opened for reading. Raises SessionError with one sentence if it cannot be read."""

    def __init__(self, path):
        self.path = os.fspath(path)
        page_size, page_count = _header_facts(self.path)
        if not os.path.exists(self.path + "-journal"):
            # Without a hot journal to roll back, the header's size is the truth: SQLite itself would
            # only say "malformed" about a file cut short.
            self._check_size(page_size, page_count)
        # Read-write when allowed: a writer killed mid-transaction leaves a hot journal that
        # only a writable connection can roll back. Nothing else is ever written.
        mode = ("rw" if os.access(self.path, os.W_OK)
                and os.access(os.path.dirname(os.path.abspath(self.path)), os.W_OK) else "ro")
        try:
            self.db = sqlite3.connect(f"file:{self._uri_path()}?mode={mode}", uri=True, check_same_thread=False)
            application_id = self.db.execute("PRAGMA application_id").fetchone()[0]
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise SessionError(f"{self.path} is damaged ({_one_line(error)}): it cannot be read") from None
        if application_id != APPLICATION_ID:
            self.db.close()
            raise SessionError(f"{self.path} is an SQLite file but not a dmabuf-top session")
        if version > SCHEMA_VERSION:
            self.db.close()
            raise SessionError(f"{self.path} uses session schema v{version}, newer than the v{SCHEMA_VERSION} "
                               "this dmabuf-top reads: upgrade dmabuf-top")
        if version < OLDEST_READABLE_VERSION:
            self.db.close()
            raise SessionError(f"{self.path} uses session schema v{version}, older than the "
                               f"v{OLDEST_READABLE_VERSION} this dmabuf-top reads: read it with the dmabuf-top that "
                               "wrote it, or record again")
        self.schema_version = version
        try:
            self._check_size(*_header_facts(self.path))
        except SessionError:
            self.db.close()
            raise
        try:
            self.metadata = {key: json.loads(value)
                             for key, value in self.db.execute("SELECT key, value FROM metadata")}
            self.db.execute("SELECT count(*) FROM buffer_snapshots").fetchone()
            if version == 1:
                read_v1_validate(self.db, self.metadata)
            if version < 3:
                read_v2_buffers(self.db)
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError, AttributeError) as error:
            # TypeError: a NULL where JSON was; KeyError, AttributeError: a v1 validate run of another shape
            self.db.close()
            raise SessionError(f"{self.path} is damaged ({_one_line(error)}): it cannot be read") from None

    def _check_size(self, page_size, page_count):
        actual = os.path.getsize(self.path)
        if page_count is not None and actual < page_size * page_count:
            raise SessionError(f"{self.path} is truncated ({actual} of {page_size * page_count} bytes): "
                               "copy the whole file, or record again")

    def _uri_path(self):
        return quote(os.path.abspath(self.path))

    # -- metadata ---------------------------------------------------------------------------

    @property
    def end_reason(self):
        reason = self.metadata.get("end_reason", RUNNING)
        reason = reason.strip() if isinstance(reason, str) else reason
        if reason == RUNNING:
            return "unfinished: the recorder was killed or crashed (every committed row is here)"
        return reason

    @property
    def exit_code(self):
        code = self.metadata.get("exit_code")
        return None if isinstance(code, str) else code

    @property
    def page_size(self):
        return self.metadata.get("page_size", 4096)

    def features(self):
        return {name: (bool(available), via, detail)
                for name, available, via, detail in self.query("SELECT * FROM features ORDER BY name")}

    def hooks(self):
        if self.schema_version == 1:
            return [_v1_hook(*row) for row in self.query("SELECT name, live, via, detail FROM hooks ORDER BY name")]
        return [Hook(name, concern, State(state), via, detail) for name, concern, state, via, detail
                in self.query("SELECT name, concern, state, via, detail FROM hooks ORDER BY name")]

    # -- rows -------------------------------------------------------------------------------

    def query(self, sql, params=()):
        """Rows of a read-only SQL query; SQLite errors become SessionError."""
        try:
            return self.db.execute(sql, params).fetchall()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as error:  # a flipped byte in a TEXT column
            raise SessionError(f"{self.path} is damaged ({_one_line(error)}): it cannot be read") from None

    def iterate(self, sql, params=()):
        try:
            yield from self.db.execute(sql, params)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as error:
            raise SessionError(f"{self.path} is damaged ({_one_line(error)}): it cannot be read") from None

    def records(self, record_type, order_by="rowid"):
        """Every row of record_type's table as record_type instances."""
        table = TABLE_OF[record_type]
        return [record_type(*row) for row in self.iterate(f"SELECT * FROM {table} ORDER BY {order_by}")]

    def count(self, record_type):
        return self.query(f"SELECT count(*) FROM {TABLE_OF[record_type]}")[0][0]

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Schema v1 stored no concern and no state: the concern is the v1 tracer's program-name prefix, and a hook
# that was not live was "not needed" when its detail said so. Only v1 files are read this way.
_V1_CONCERN_OF_PREFIX = (("copy_", "cpu_copy"), ("gup_", "gup"), ("pagecache_", "page_cache"),
                         ("lifecycle_", "lifecycle"), ("rw_file_", "rw_file"), ("syscall_", "syscalls"),
                         ("flush_on_switch", "syscalls"), ("follow_fork", "children"))


def _v1_hook(name, live, via, detail):
    concern = next((concern for prefix, concern in _V1_CONCERN_OF_PREFIX if name.startswith(prefix)), None)
    if concern is None:
        phase, _, syscall = name.partition("_")
        concern = SYSCALLS[syscall] if phase in ("enter", "exit") and syscall in SYSCALLS else name
    state = State.LIVE if live else State.NOT_NEEDED if "not needed" in (detail or "") else State.MISSING
    return Hook(name, concern, state, via, detail)


# --------------------------------------------------------------------------------------------
# Schema v1: validate sessions kept their run as a JSON blob


V1_MEASURED = ("moved", "reached", "cpu_copied", "page_cache_pages", "pinned_pages", "got_pages", "syscalls",
               "errors")


def read_v1_validate(db, metadata):
    """Reads a v1 session as v2 without changing the file. v1 had no methods tables: they are made empty
    (TEMP tables), so every session answers the same queries.

    v1 kept the run as JSON in metadata `validate` and spread each method's per-path totals evenly over its I/O
    window as path_samples. Here the run becomes TEMP methods and method_flows tables, and a TEMP path_samples
    (it shadows the file's) holds what was measured, as v2 writes it: one row per method and path at the end of
    the method's window. The blob leaves the metadata; `per_call_events` says validate kept none.
    """
    tables = [statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1)
              for statement in METHOD_TABLES.split(";") if statement.strip()]
    for statement in tables:
        db.execute(statement)
    run = metadata.pop("validate", None)
    if not isinstance(run, dict):
        return
    metadata["per_call_events"] = False
    db.execute("CREATE TEMP TABLE path_samples AS SELECT * FROM main.path_samples WHERE 0")
    tgid = (db.execute("SELECT tgid FROM main.path_samples LIMIT 1").fetchone() or (0,))[0]
    source = run.get("file") or {}
    page_cache = "warm" if run.get("page_cache") == "warm" else "dropped"
    methods, flows, samples = [], [], []
    for row in run.get("methods", []):
        verdict = row.get("verdict") or {}
        # Sessions recorded before a method that never ran had nulls held zeros (the CI's of 2026-11-21).
        ran = verdict.get("kind") != "absent" and row.get("io_ms") is not None
        measured = {name: row.get(name) if ran else None for name in V1_MEASURED}
        ended_ns = row.get("ended_ns") or 0
        methods.append(Method(
            row["name"], row.get("summary", ""), row.get("buffer", ""), bool(row.get("direct")), source.get("path"),
            source.get("filesystem"), page_cache, row.get("payload") or 0, row.get("buffer_inode") or 0,
            row.get("started_ns") or 0, row.get("io_started_ns") or 0, ended_ns, row.get("closed_ns") or 0,
            row.get("alloc_ms"), row.get("io_ms"), row.get("close_ms"), measured["moved"], measured["reached"],
            measured["cpu_copied"], measured["page_cache_pages"], measured["pinned_pages"], measured["got_pages"],
            measured["syscalls"], measured["errors"], row.get("errno"), row.get("checksum"),
            verdict.get("kind", "unmeasured"), verdict.get("label", ""), verdict.get("copies"),
            "\n".join(verdict.get("reasons") or ()), "\n".join(row.get("notes") or ())))
        flows += [MethodFlow(row["name"], f["path"], f["src_kind"], f["dst_kind"], f["src_fs"], f["dst_fs"],
                             f["bytes"], f["calls"], f["error"]) for f in row.get("flows") or ()]
        if ran and ended_ns:
            samples += [PathSample(ended_ns, row.get("buffer_inode") or 0, tgid, path, c.get("bytes") or 0,
                                   c.get("cpu_copied") or 0, c.get("pinned_pages") or 0, c.get("pc_added") or 0,
                                   c.get("calls") or 0, c.get("errors") or 0)
                        for path, c in (row.get("paths") or {}).items()]
    for table, rows in (("methods", methods), ("method_flows", flows), ("path_samples", samples)):
        if rows:
            db.executemany(f"INSERT INTO temp.{table} VALUES ({','.join('?' * len(rows[0]))})", rows)


# --------------------------------------------------------------------------------------------
# Schemas v1 and v2: no buffers table; what they knew of each buffer is in the snapshots and lifecycle events

BUFFER_TABLES = SCHEMA[SCHEMA.index("CREATE TABLE buffers ("):SCHEMA.index("CREATE TABLE path_samples (")]


def read_v2_buffers(db):
    """Reads a v1 or v2 session's buffers as v3 does, without changing the file: TEMP buffers, buffer_names
    and alloc_stacks tables made from buffer_snapshots (exporter, size, names seen) and lifecycle_events
    (creator, creation and release). Those sessions took no allocation stacks: alloc_stacks stays empty."""
    for statement in BUFFER_TABLES.split(";"):
        if statement.strip():
            db.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))
    db.execute("""
        INSERT INTO temp.buffer_names
        SELECT min(time_ns), inode, name, 'snapshot', 0 FROM main.buffer_snapshots
        WHERE name IS NOT NULL GROUP BY inode, name""")
    db.execute("""
        WITH inodes AS (SELECT inode FROM main.buffer_snapshots UNION SELECT inode FROM main.lifecycle_events),
        export AS (SELECT inode, tgid, comm, size, min(time_ns) AS t FROM main.lifecycle_events
                   WHERE event = 'export' GROUP BY inode),
        released AS (SELECT inode, max(time_ns) AS t FROM main.lifecycle_events WHERE event = 'release'
                     GROUP BY inode),
        seen AS (SELECT inode, exporter, size, max(time_ns) AS t FROM main.buffer_snapshots GROUP BY inode),
        named AS (SELECT inode, name, max(time_ns) AS t FROM temp.buffer_names GROUP BY inode),
        sized AS (SELECT inode, max(size) AS size FROM main.lifecycle_events GROUP BY inode)
        INSERT INTO temp.buffers
        SELECT i.inode, coalesce(seen.exporter, ''), coalesce(seen.size, export.size, sized.size, 0), named.name,
               coalesce(export.tgid, 0), 0, coalesce(export.comm, ''), 0, '', coalesce(export.t, 0),
               coalesce(released.t, 0), -1, -1, ''
        FROM inodes i LEFT JOIN export USING (inode) LEFT JOIN released USING (inode) LEFT JOIN seen USING (inode)
        LEFT JOIN named USING (inode) LEFT JOIN sized USING (inode)
        WHERE i.inode != 0""")


def open_session(path):
    return Session(path)
