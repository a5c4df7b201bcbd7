"""The live view's columns and rows: what each pane shows, how a cell reads. Pure: no kernel, no terminal.

Every column is declared once, in `COLUMNS`, with its sort key (what `-s` and
`<`/`>` use), label, width, format and the tracing concerns that fill it: when
all of those concerns' hooks are missing the cell reads "n/t" (not traced),
never 0. A value that exists but is not known yet (the first sample has no
rate) is None and reads "-".

The model (model.py), the Buffers pane's table (buffer_table.py), the view state
(view.py) and the renderers (screen.py, jsonout.py) all build on this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from ..text import human_size
from ..trace_model import NOT_TRACED

PANES = ("buffers", "processes", "exporters", "paths", "cgroups", "leaks")
PANE_TITLES = {"buffers": "Buffers", "processes": "Processes", "exporters": "Exporters", "paths": "Paths",
               "cgroups": "Cgroups", "leaks": "Leaks"}
# rw_file: an exporter's own file I/O (DMA_BUF_IOCTL_RW_FILE), on patched kernels only (kernel/series);
# elsewhere its row says "absent", never 0.
# io_uring, aio: asynchronous requests, credited at completion to the process that issued them.
IO_PATHS = ("read", "write", "copy_file_range", "sendfile", "splice", "rw_file", "io_uring", "aio")
NOT_AVAILABLE = "n/a"  # the kernel keeps no such figure for this row (see Row.unavailable)
DELAYS = {"blkio": "blkio", "swapin": "swapin", "reclaim": "freepages"}  # column -> taskstats kind


@dataclass(frozen=True)
class Column:
    key: str  # the sort key (-s KEY) and the JSON field
    label: str
    width: int
    fmt: str = "int"  # text | int | size | signed_size | age | mbps | rate | pct | us
    concerns: Tuple[str, ...] = ()  # tracing concerns that fill it; n/t when all are missing
    help: str = ""
    none: str = "-"  # what a value not known reads as (a rate before the second sample: "-")
    narrow: int = 0  # where the line is too narrow for every column, rank 1 gives way first, then 2...; 0 stays
    short: Tuple[Tuple[str, str], ...] = ()  # (value, what it reads as where it is wider than the column)

    @property
    def left(self):
        return self.fmt == "text"


# Exporter names wider than their column, said so that they read rather than cut ("default_c~"); the JSON, the
# header's per-exporter totals and `snapshot` keep the name. The arm64 CMA heap is named after its area
# (alloc.CMA_HEAP_NAMES); the other common exporters (system, udmabuf, reserved, linux,cma, GPU drivers) fit.
EXPORTER_SHORT = (("default_cma_region", "cma:default"),)
_EXPORTER_SHORT_FORM = dict(EXPORTER_SHORT)  # looked up once per buffer per refresh by the filter's text


def exporter_search_text(exporter) -> str:
    """What the filter matches of an exporter: its name and the short form the panes may show instead."""
    name = exporter or "?"
    short = _EXPORTER_SHORT_FORM.get(name)
    return f"{name} {short}" if short else name


EXPORTER_HELP = "the exporter (exp_name); the CMA heap's default_cma_region reads cma:default"

XFER_PATHS = ("copy_file_range", "sendfile", "splice", "rw_file")
ASYNC_PATHS = ("io_uring", "aio")
IO_COLUMNS = ("read", "write", "xfer", "async", "copy", "pin")
_IO = (
    Column("read", "RD MB/s", 8, "mbps", ("read",), "bytes/s moved by read/pread/readv into the memory"),
    Column("write", "WR MB/s", 8, "mbps", ("write",), "bytes/s moved by write/pwrite/writev out of the memory"),
    Column("xfer", "XFER MB/s", 9, "mbps", XFER_PATHS,
           "bytes/s by copy_file_range, sendfile, splice and an exporter's rw_file (patched kernels)", narrow=6),
    Column("async", "ASYNC MB/s", 10, "mbps", ASYNC_PATHS,
           "bytes/s moved by io_uring and AIO read/write requests into or out of the memory (at completion)"),
    Column("copy", "CPU-CP MB/s", 11, "mbps", ("cpu_copy",), "bytes/s the CPU copied (page cache <-> user)"),
    Column("pin", "PIN pg/s", 8, "rate", ("gup",), "pages/s pinned by get_user_pages", narrow=1),
)

COLUMNS: Dict[str, Tuple[Column, ...]] = {
    "buffers": (
        Column("inode", "INODE", 8),
        Column("exporter", "EXPORTER", 11, "text", help=EXPORTER_HELP, short=EXPORTER_SHORT),
        Column("size", "SIZE", 10, "size"),
        Column("attachments", "ATT", 3, narrow=4),
        Column("holders", "HOLDERS", 18, "text", help="pid(comm) of every process with an fd or mapping"),
        *_IO,
        Column("name", "NAME", 0, "text", help="the buffer's name (DMA_BUF_SET_NAME), escaped"),
    ),
    "processes": (
        Column("pid", "PID", 7),
        Column("comm", "COMM", 15, "text"),
        Column("buffers", "BUFS", 5),
        Column("rss", "RSS", 10, "size", help="sum of the sizes of the buffers it references"),
        Column("pss", "PSS", 10, "size", help="each buffer's size divided by its number of holders"),
        Column("fds", "FDS", 4, narrow=5),
        Column("maps", "MAPS", 4, narrow=5),
        *_IO,
        Column("blkio", "BLKIO%", 6, "pct", ("delayacct",), "share of the interval spent waiting for block I/O"),
        Column("swapin", "SWAPIN%", 7, "pct", ("delayacct",), "share of the interval spent waiting for swap-in",
               narrow=3),
        Column("reclaim", "RECLAIM%", 8, "pct", ("delayacct",), "share of the interval spent in memory reclaim",
               narrow=2),
    ),
    "exporters": (
        Column("exporter", "EXPORTER", 16, "text", help=EXPORTER_HELP, short=EXPORTER_SHORT),
        Column("buffers", "BUFFERS", 8),
        Column("bytes", "BYTES", 10, "size"),
        *_IO,
    ),
    "paths": (
        Column("path", "PATH", 16, "text"),
        Column("calls", "CALLS/s", 8, "rate"),
        Column("bytes", "MB/s", 8, "mbps"),
        Column("copy", "CPU-CP MB/s", 11, "mbps", ("cpu_copy",)),
        Column("pin", "PIN pg/s", 8, "rate", ("gup",)),
        Column("pc_added", "PC+ pg/s", 8, "rate", ("page_cache",), "page-cache pages added per second"),
        Column("latency", "AVG us", 8, "us", help="mean syscall latency over the interval"),
        Column("status", "HOOKS", 0, "text"),
    ),
    # inventory/cgroup_totals.py: a buffer held from two cgroups is in both rows' HELD and SHARED.
    "cgroups": (
        Column("cgroup", "CGROUP", 24, "text", help="the unit or container the cgroup is (foo.service, docker:ID)"),
        Column("processes", "PROCS", 5, help="processes of the cgroup holding dma-bufs"),
        Column("buffers", "BUFS", 5),
        Column("held", "HELD", 10, "size", help="bytes of the buffers its processes hold, each buffer once"),
        Column("shared", "SHARED", 10, "size", help="the part of HELD also held from another cgroup"),
        Column("created", "CREATED", 10, "size", help="bytes its processes created (lifecycle probe)",
               none="not known"),
        Column("cgroup_path", "PATH", 0, "text", help="the cgroup v2 path, escaped"),
    ),
    # live/leak_rows.py: one row per group of leaks.LeakTracker (the rules of `dmabuf-top leaks`).
    "leaks": (
        Column("buffers", "BUFS", 5, help="buffers of the group alive at least --min-age"),
        Column("bytes", "BYTES", 10, "size"),
        Column("growth", "GROWTH", 9, "signed_size", help="the group's bytes now minus when the view started"),
        Column("age", "AGE", 8, "age", help="the oldest buffer's age; '>=' when it existed before the view"),
        Column("creator", "CREATOR", 33, "text", help="pid(comm) of the oldest buffer's creator, 'exited' when it "
               "has; 'before start' for buffers older than the view; +N: other creators in the group"),
        Column("holders", "HOLDERS", 28, "text", help="pid(comm) holding by fd, 'map' by mapping; 'no process:' "
               "the attached devices, or a kernel reference"),
        Column("stack", "ALLOCATION STACK (user < ... | kernel)", 0, "text",
               help="innermost first; a group without a stack says why, and is keyed by exporter + size + name"),
    ),
}
DEFAULT_SORT = {"buffers": "size", "processes": "rss", "exporters": "bytes", "paths": "bytes", "cgroups": "held",
                "leaks": "bytes"}
# Columns whose natural order is ascending (names, ids); numbers sort largest first.
ASCENDING = {"inode", "exporter", "holders", "name", "pid", "comm", "path", "status", "cgroup", "cgroup_path",
             "creator", "stack"}


class AgeAtLeast(float):
    """An age in seconds that is a lower bound (the buffer existed before the view started): reads ">=12s"."""


FILL_MIN = 12  # the line's last, 0-width column (NAME, PATH) keeps at least this much when columns give way


def shown_columns(pane: str, width: int, keep: str = "") -> Tuple[Column, ...]:
    """The pane's columns that fit `width`: the lowest `narrow` ranks give way first (a rank at a time) until the
    fixed columns leave FILL_MIN for the last one. `keep` (the sort key) is never dropped; when nothing more can
    give way the line is cut as before."""
    columns = COLUMNS[pane]
    ranks = sorted({c.narrow for c in columns if c.narrow and c.key != keep})
    for rank in [0, *ranks]:
        shown = tuple(c for c in columns if not (c.narrow and c.narrow <= rank and c.key != keep))
        fixed = sum(c.width + 1 for c in shown if c.width)  # each with the space after it
        if (fixed + FILL_MIN if any(not c.width for c in shown) else fixed - 1) <= width:
            return shown
    return shown


def column(pane, key) -> Column:
    return next(c for c in COLUMNS[pane] if c.key == key)


def sort_keys() -> List[str]:
    return sorted({c.key for columns in COLUMNS.values() for c in columns})


class Row:
    """One line of a pane. values: column key -> value (None: not known yet); extra: JSON-only
    detail; state: "new", "freed" or None; search: lower-case text the filter matches."""

    __slots__ = ("key", "values", "extra", "state", "search")

    def __init__(self, key, values, extra=None, state=None, search=""):
        self.key = key
        self.values = values
        self.extra = extra or {}
        self.state = state
        self.search = search

    def __repr__(self):
        return f"Row({self.key!r}, {self.values!r}, state={self.state!r})"

    @property
    def unavailable(self) -> Tuple[str, ...]:
        """Column keys the kernel keeps no figure for in this row: they read n/a, never 0."""
        return tuple(DELAYS) if self.extra.get("delays_na") else ()


# ---------------------------------------------------------------------------
# Cells


def format_cell(col: Column, value, not_traced=False, unavailable=False) -> str:
    if not_traced:
        return NOT_TRACED
    if unavailable:
        return NOT_AVAILABLE
    if value is None:
        return col.none
    fmt = col.fmt
    if fmt == "text":
        text = str(value)
        if col.short and col.width and len(text) > col.width:
            text = dict(col.short).get(text, text)
        return text
    if fmt == "size":
        return human_size(value)
    if fmt == "signed_size":
        return ("-" if value < 0 else "+") + human_size(abs(value))
    if fmt == "age":
        return (">=" if isinstance(value, AgeAtLeast) else "") + _age(value)
    if fmt == "mbps":
        return _number(value / 1e6)
    if fmt == "rate":
        return _number(value)
    if fmt == "pct":
        return f"{value:.1f}"
    if fmt == "us":
        return f"{value:.1f}"
    return str(value)


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if value < 0.01:
        return "<0.01"
    if value < 10:
        return f"{value:.2f}"
    if value < 100000:
        return f"{value:.1f}"
    return f"{value:.3g}"
