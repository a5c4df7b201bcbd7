"""A session's tables as CSV or JSON, for spreadsheets and scripts.

CSV: one line per row, whatever a buffer's name holds (terminal_safe escapes line breaks
and control bytes), and no cell a spreadsheet would run as a formula (a leading = + - @
TAB or CR gets a leading apostrophe). JSON: names as text (invalid UTF-8 replaced) plus
`name_hex`, the exact bytes.
"""
import csv
import json
from dataclasses import asdict

from ..text import terminal_safe
from . import methods, tables
from .renderers import FORMATS, Renderer

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    cell = terminal_safe(value)
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def _buffer_rows(session):
    header = ("inode", "exporter", "name", "size", "max_file_refs", "max_attachments", "first_seen_s",
              "last_seen_s", "io_bytes", "creator_pid", "creator_comm", "cgroup", "created_s", "released_s",
              "earlier_names")
    rows = [(b.inode, b.exporter, b.name if b.name is not None else None, b.size, b.max_file_refs,
             b.max_attachments, round(b.first_seen_s, 6), round(b.last_seen_s, 6), b.io_bytes, b.creator_pid,
             b.creator_comm, b.cgroup, _rounded(b.created_s), _rounded(b.released_s),
             b" | ".join(b.names[:-1]) if len(b.names) > 1 else None)
            for b in tables.top_buffers(session)]
    return header, rows


def _rounded(seconds):
    return None if seconds is None else round(seconds, 6)


def _path_rows(session):
    header = ("path", "calls", "errors", "bytes", "cpu_copied_bytes", "pinned_bytes", "page_cache_added_bytes")
    return header, [tuple(asdict(t).values()) for t in tables.path_totals(session)]


def _latency_rows(session):
    header = ("path", "calls", "p50_us", "p99_us", "max_bucket")
    return header, [tuple(asdict(r).values()) for r in tables.latency_table(session)]


def _method_rows(session):
    """The methods of a validate session (none for others); what was not measured is an empty cell."""
    return methods.EXPORT_COLUMNS, [tuple(methods.export_row(m).values()) for m in methods.rows(session)]


def _cgroup_rows(session):
    header = ("kind", "cgroup", "short", "peak_held_bytes", "peak_s", "last_held_bytes", "peak_shared_bytes",
              "peak_processes", "peak_buffers")
    return header, [(r.kind, r.cgroup, r.short, r.peak_held_bytes, round(r.peak_s, 6), r.last_held_bytes,
                     r.peak_shared_bytes, r.peak_processes, r.peak_buffers) for r in tables.cgroup_table(session)]


def _cgroup_json(row):
    data = asdict(row)
    data["cgroup"] = None if row.cgroup is None else row.cgroup.decode("utf-8", "replace")
    data["cgroup_hex"] = None if row.cgroup is None else row.cgroup.hex()
    data["short"] = row.short.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return data


CSV_TABLES = {"buffers": _buffer_rows, "paths": _path_rows, "latency": _latency_rows, "methods": _method_rows,
              "cgroups": _cgroup_rows}


class CsvRenderer(Renderer):
    """One table (options.table: buffers, paths, latency or methods) as CSV."""

    format = FORMATS["csv"]

    def render(self, session, out):
        header, rows = CSV_TABLES[self.options.table](session)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([csv_cell(value) for value in row])


def _buffer_json(b):
    data = asdict(b)
    data["name"] = None if b.name is None else b.name.decode("utf-8", "replace")
    data["name_hex"] = None if b.name is None else b.name.hex()
    data["names"] = [name.decode("utf-8", "replace") for name in b.names]
    return data


def tables_dict(session):
    return {
        "schema": "dmabuf-top tables v1",
        "summary": tables.summary(session),
        "paths": [asdict(t) for t in tables.path_totals(session)],
        "latency": [asdict(r) for r in tables.latency_table(session)],
        "buffers": [_buffer_json(b) for b in tables.top_buffers(session)],
        "missing_hooks": [{"hook": name, "why": why} for name, why in tables.missing_hooks(session)],
        "dropped_events": tables.dropped_events(session),
        "methods": [dict(zip(_method_rows(session)[0], row)) for row in _method_rows(session)[1]],
        "cgroups": [_cgroup_json(row) for row in tables.cgroup_table(session)],
    }


class JsonRenderer(Renderer):
    """Every table in one JSON object."""

    format = FORMATS["json"]

    def render(self, session, out):
        json.dump(tables_dict(session), out, indent=1, sort_keys=True)
        out.write("\n")
