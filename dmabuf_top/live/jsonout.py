"""`dmabuf-top --json`: one JSON object per interval, one per line. Schema "dmabuf-top.live/2".

    {"schema": "dmabuf-top.live/2", "sequence": int (1 for the first interval),
     "time": float (Unix seconds), "elapsed_s": float|null (measured since the previous
     object; null on the first), "interval_s": float, "kernel": str, "pid": int|null,
     "source": str, "holders_source": str, "notes": [str],
     "totals": {"buffers", "bytes", "kernel_only_buffers", "kernel_only_bytes",
                "userspace_rss", "userspace_pss"} (ints),
     "hooks": {"live": [concern], "missing": {concern: reason}, "absent": {path: reason}},
     "dropped_events": int|null,
     "map_full": {map: int}|null (new keys each map the counters come from refused because it was
                 full: "io_by_target", "io_by_task", "stack_counts", "traced_tgids"; null without tracing),
     "cannot_see": [str],
     "buffers":   [{"inode", "exporter", "size", "attachments", "holders": [{"pid", "fds", "maps"}],
                    "name", "name_hex", "state": "new"|"freed"|null, "read", "write", "xfer", "async", "copy",
                    "pin",
                    "paths": {path: {field: per second}}|null}],
     "processes": [{"pid", "comm", "comm_hex", "buffers", "rss", "pss", "fds", "maps",
                    "read", "write", "xfer", "async", "copy", "pin", "blkio", "swapin", "reclaim",
                    "delays": {kind: {"count", "total_ns"}}|null, "delays_na": str|null, "paths": {...}|null}],
     "exporters": [{"exporter", "buffers", "bytes", "read", "write", "xfer", "async", "copy", "pin"}],
     "paths":     [{"path", "calls", "bytes", "copy", "pin", "pc_added", "latency", "status"}],
     "cgroups":   [{"kind": "cgroup"|"unknown"|"kernel-only", "cgroup": str|null, "cgroup_hex": str|null,
                    "short", "processes", "buffers", "held_bytes", "shared_bytes", "created_bytes": int|null}]}

"cgroups" follows snapshot's rules (inventory/cgroup_totals.py): a buffer held from two
cgroups is in both rows' held and shared bytes; "created_bytes" is null when the creator is
not known (no lifecycle probe), never 0.

Rates are per second over the measured elapsed time: "read", "write", "xfer"
(copy_file_range + sendfile + splice), "async" (io_uring + AIO requests, at completion),
"copy" (CPU-copied) in bytes/s, "pin" in
pages/s, "calls" and "pc_added" (page-cache pages) per second, "latency" the
mean in microseconds. A rate is null when there is none to give: on the first
object, for a counter that went backwards, or when its hooks are missing (then
the concern is in hooks.missing, or the path in hooks.absent: a kernel without
it, as rw_file on an unpatched kernel; "status" then says "n/t: ..." or "absent: ...").
"blkio", "swapin", "reclaim" are the percent of the interval the process waited for
block I/O, swap-in and memory reclaim (taskstats delay accounting); "delays" holds the
kernel's cumulative totals.
"delays_na" says why a process has none of the three (they are null, "n/a" on
screen, and "delays" keeps only "cpu"): the kernel keeps them only for processes
forked while delay accounting is on, and this one is older than the moment the
view turned it on. Null when they are kept (or accounting is off altogether:
then "delayacct" is in hooks.missing).
Names and comms are given lossy ("name", UTF-8 with U+FFFD) and exact ("name_hex");
the output is ASCII, so any bytes in a name keep it valid. `-r ROWS` caps every list.
`JSON_SCHEMA` below is the same contract as a JSON Schema; the tests validate against it.
Schema history: live/2 (2026-12) added "async" (io_uring and AIO requests) to the rate rows and the
"cgroups" array; live/1 had neither (its schema forbids unknown keys, hence the new name).
"""
from __future__ import annotations

import json
from typing import Optional

from .columns import COLUMNS, IO_COLUMNS, PANES
from .model import Frame
from .view import ViewState, visible_rows

SCHEMA = "dmabuf-top.live/2"
# The Leaks pane's machine form is `dmabuf-top leaks --json` (render_leaks.py), with every buffer of each group.
JSON_PANES = tuple(pane for pane in PANES if pane != "leaks")

_INT = {"type": "integer"}
_RATE = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_PATHS = {"type": ["object", "null"], "additionalProperties": {"type": "object",
                                                                "additionalProperties": {"type": "number"}}}


def _object(properties, required=None):
    return {"type": "object", "properties": properties, "required": list(required or properties),
            "additionalProperties": False}


_IO = {key: _RATE for key in IO_COLUMNS}
JSON_SCHEMA = _object({
    "schema": {"const": SCHEMA},
    "sequence": {"type": "integer", "minimum": 1},
    "time": {"type": "number"},
    "elapsed_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "interval_s": {"type": "number", "exclusiveMinimum": 0},
    "kernel": {"type": "string"},
    "pid": {"type": ["integer", "null"]},
    "source": {"enum": ["iterator", "bufinfo", "fdinfo"]},
    "holders_source": {"enum": ["iterator", "procfs"]},
    "notes": {"type": "array", "items": {"type": "string"}},
    "totals": _object({name: {"type": "integer", "minimum": 0} for name in (
        "buffers", "bytes", "kernel_only_buffers", "kernel_only_bytes", "userspace_rss", "userspace_pss")}),
    "hooks": _object({"live": {"type": "array", "items": {"type": "string"}},
                      "missing": {"type": "object", "additionalProperties": {"type": "string"}},
                      "absent": {"type": "object", "additionalProperties": {"type": "string"}}}),
    "dropped_events": {"type": ["integer", "null"], "minimum": 0},
    "map_full": {"type": ["object", "null"], "additionalProperties": {"type": "integer", "minimum": 0}},
    "cannot_see": {"type": "array", "items": {"type": "string"}},
    "buffers": {"type": "array", "items": _object({
        "inode": _INT, "exporter": _STR_OR_NULL, "size": {"type": "integer", "minimum": 0},
        "attachments": {"type": ["integer", "null"]},
        "holders": {"type": "array", "items": _object({"pid": _INT, "fds": _INT, "maps": _INT})},
        "name": _STR_OR_NULL, "name_hex": {"type": ["string", "null"], "pattern": "^([0-9a-f]{2})*$"},
        "state": {"enum": ["new", "freed", None]}, **_IO, "paths": _PATHS})},
    "processes": {"type": "array", "items": _object({
        "pid": _INT, "comm": {"type": "string"}, "comm_hex": {"type": "string", "pattern": "^([0-9a-f]{2})*$"},
        "buffers": _INT, "rss": _INT, "pss": _INT, "fds": _INT, "maps": _INT, **_IO,
        "blkio": _RATE, "swapin": _RATE, "reclaim": _RATE,
        "delays": {"type": ["object", "null"], "additionalProperties": _object(
            {"count": {"type": "integer", "minimum": 0}, "total_ns": {"type": "integer", "minimum": 0}})},
        "delays_na": _STR_OR_NULL, "paths": _PATHS})},
    "exporters": {"type": "array", "items": _object({
        "exporter": {"type": "string"}, "buffers": _INT, "bytes": _INT, **_IO})},
    "paths": {"type": "array", "items": _object({
        "path": {"type": "string"}, "calls": _RATE, "bytes": _RATE, "copy": _RATE, "pin": _RATE,
        "pc_added": _RATE, "latency": _RATE, "status": {"type": "string"}})},
    "cgroups": {"type": "array", "items": _object({
        "kind": {"enum": ["cgroup", "unknown", "kernel-only"]}, "cgroup": _STR_OR_NULL,
        "cgroup_hex": {"type": ["string", "null"], "pattern": "^([0-9a-f]{2})*$"}, "short": {"type": "string"},
        "processes": _INT, "buffers": _INT, "held_bytes": _INT, "shared_bytes": _INT,
        "created_bytes": {"type": ["integer", "null"]}})},
})


def _raw(value):
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


def _rates(row, keys, not_traced):
    return {key: None if key in not_traced else row.values.get(key) for key in keys}


def to_dict(frame: Frame, view: Optional[ViewState] = None, max_rows: Optional[int] = None) -> dict:
    view = view or ViewState()
    panes = {}
    for pane in JSON_PANES:
        rows = visible_rows(frame, ViewState(pane=pane, sort=view.sort, reverse=view.reverse, filter=view.filter))
        panes[pane] = rows[:max_rows] if max_rows else rows
    nt = {pane: frame.not_traced(pane) for pane in JSON_PANES}
    totals = frame.totals
    buffers = []
    for row in panes["buffers"]:
        name = _raw(row.extra.get("name_raw"))
        buffers.append({
            "inode": row.values["inode"], "exporter": row.values["exporter"], "size": row.values["size"],
            "attachments": row.values["attachments"],
            "holders": [{"pid": pid, "fds": refs.fds, "maps": refs.maps}
                        for pid, refs in sorted(row.extra.get("holder_refs", {}).items())],
            "name": None if name is None else name.decode("utf-8", "replace"),
            "name_hex": None if name is None else name.hex(),
            "state": row.state, **_rates(row, IO_COLUMNS, nt["buffers"]), "paths": row.extra.get("paths"),
        })
    processes = []
    for row in panes["processes"]:
        comm = _raw(row.extra.get("comm_raw")) or b""
        processes.append({
            "pid": row.values["pid"], "comm": comm.decode("utf-8", "replace"), "comm_hex": comm.hex(),
            **{key: row.values[key] for key in ("buffers", "rss", "pss", "fds", "maps")},
            **_rates(row, (*IO_COLUMNS, "blkio", "swapin", "reclaim"), nt["processes"]),
            "delays": row.extra.get("delays"), "delays_na": row.extra.get("delays_na"),
            "paths": row.extra.get("paths"),
        })
    exporters = [{"exporter": row.values["exporter"], "buffers": row.values["buffers"], "bytes": row.values["bytes"],
                  **_rates(row, IO_COLUMNS, nt["exporters"])} for row in panes["exporters"]]
    path_keys = [c.key for c in COLUMNS["paths"] if c.key not in ("path", "status")]
    paths = [{"path": row.values["path"], **_rates(row, path_keys, nt["paths"] | _missing_path(frame, row)),
              "status": row.values["status"]} for row in panes["paths"]]
    cgroups = []
    for row in panes["cgroups"]:
        path = row.extra.get("path_raw")
        cgroups.append({"kind": row.extra["kind"], "cgroup": None if path is None else path.decode("utf-8", "replace"),
                        "cgroup_hex": None if path is None else path.hex(), "short": row.values["cgroup"],
                        "processes": row.values["processes"], "buffers": row.values["buffers"],
                        "held_bytes": row.values["held"], "shared_bytes": row.values["shared"],
                        "created_bytes": row.values["created"]})
    return {
        "schema": SCHEMA, "sequence": frame.sequence, "time": frame.wall, "elapsed_s": frame.elapsed,
        "interval_s": frame.interval, "kernel": frame.kernel, "pid": frame.pid, "source": frame.source,
        "holders_source": frame.holders_source, "notes": list(frame.notes),
        "totals": {name: getattr(totals, name) for name in (
            "buffers", "bytes", "kernel_only_buffers", "kernel_only_bytes", "userspace_rss", "userspace_pss")},
        "hooks": {"live": list(frame.live_concerns), "missing": dict(frame.missing), "absent": dict(frame.absent)},
        "dropped_events": frame.dropped, "map_full": None if frame.map_full is None else dict(frame.map_full),
        "cannot_see": list(frame.cannot_see),
        "buffers": buffers, "processes": processes, "exporters": exporters, "paths": paths, "cgroups": cgroups,
    }


def _missing_path(frame, row):
    """A path whose own hooks are missing, or that this kernel lacks, has no rate at all."""
    return set(row.extra.get("untraced", ()))


def render_json(frame: Frame, view: Optional[ViewState] = None, max_rows: Optional[int] = None) -> str:
    return json.dumps(to_dict(frame, view, max_rows), ensure_ascii=True, allow_nan=False)
