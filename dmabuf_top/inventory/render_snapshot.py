"""Renderers for a snapshot (an inventory.Inventory): tables, JSON and CSV. Pure functions.

JSON schema ("schema": "dmabuf-top.snapshot/1"); sizes are exact bytes:

    {"schema", "source", "source_detail", "holders_source", "holders_detail", "notes": [str],
     "totals": {"buffers", "bytes", "kernel_only_buffers", "kernel_only_bytes",
                "userspace_rss", "userspace_pss"},
     "exporters": [{"exporter", "buffers", "bytes"}],
     "buffers": [{"inode", "size", "exporter", "name", "name_hex", "file_refs", "kernel_refs",
                  "fd_refs", "map_refs", "attachments", "devices": [str], "vmapped",
                  "backing_inode", "backing_dev", "kernel_only",
                  "holders": [{"pid", "fds", "maps"}]}],
     "processes": [{"pid", "comm", "comm_hex", "cgroup", "cgroup_hex", "rss", "pss", "fd_refs", "map_refs",
                    "buffers": [{"inode", "fds", "maps"}]}],
     "cgroups": {"total_bytes", "shared_buffers", "shared_bytes", "creators_known",
                 "creator_not_known_buffers", "creator_not_known_bytes",
                 "rows": [{"kind", "cgroup", "cgroup_hex", "short", "processes", "buffers",
                           "held_bytes", "shared_bytes", "created_buffers", "created_bytes"}]}}

"cgroups" (cgroup_totals.py has the rules): "kind" is "cgroup", "unknown" (holders whose
cgroup could not be read) or "kernel-only" (buffers no process holds); a buffer held from
two cgroups is in both rows' "held_bytes" and "shared_bytes", and once in the top-level
"shared_bytes", so sum(held_bytes - shared_bytes) + shared_bytes == total_bytes.
"created_*" are null when the creator is not known (no lifecycle probe); "cgroups" is
null, and each process's "cgroup" too, when the holders' cgroups were not read.

Names and comms are set by any process and are arbitrary bytes. Each is given
twice: "name" is the bytes decoded as UTF-8 with invalid sequences replaced by
U+FFFD (for reading; lossy), "name_hex" is the exact bytes in lowercase hex
(for programs; lossless). Both are null for a buffer never named; a buffer
named "" has "name": "" and "name_hex": "". The output is plain ASCII JSON
(non-ASCII escaped), so it is valid whatever the names hold. A value a source
cannot know is null: "exporter"/"file_refs"/"kernel_refs"/"attachments" of a
buffer seen only through a mapping, and "attachments" from fdinfo.

CSV: one header line, then one line per row, whatever the names hold: names are
escaped as on the terminal (text.terminal_safe: \\n, \\t, \\xNN, backslash
doubled, so it is reversible), with a "named" column telling unnamed from "".
"""
from __future__ import annotations

import csv
import io
import json

from ..text import human_size, terminal_safe
from .cgroup_totals import cgroup_totals
from .inventory import HOLDER_DESCRIPTIONS, SOURCE_DESCRIPTIONS

SCHEMA = "dmabuf-top.snapshot/1"


def _lossy(raw):
    return None if raw is None else bytes(raw).decode("utf-8", "replace")


def _hex(raw):
    return None if raw is None else bytes(raw).hex()


def to_dict(inventory, creators=None) -> dict:
    """creators: {inode: creator's cgroup} from the lifecycle probe, None without one."""
    totals = inventory.totals
    cgroup_of = inventory.cgroups or {}
    return {
        "schema": SCHEMA,
        "source": inventory.source,
        "source_detail": SOURCE_DESCRIPTIONS[inventory.source],
        "holders_source": inventory.holders_source,
        "holders_detail": HOLDER_DESCRIPTIONS[inventory.holders_source],
        "notes": list(inventory.notes),
        "totals": {
            "buffers": totals.buffers,
            "bytes": totals.bytes,
            "kernel_only_buffers": totals.kernel_only_buffers,
            "kernel_only_bytes": totals.kernel_only_bytes,
            "userspace_rss": totals.userspace_rss,
            "userspace_pss": totals.userspace_pss,
        },
        "exporters": [{"exporter": e.exporter, "buffers": e.buffers, "bytes": e.bytes} for e in inventory.exporters],
        "buffers": [_buffer_dict(entry) for entry in inventory.buffers],
        "processes": [
            {
                "pid": process.pid,
                "comm": _lossy(process.comm),
                "comm_hex": _hex(process.comm),
                "cgroup": _lossy(cgroup_of.get(process.pid)),
                "cgroup_hex": _hex(cgroup_of.get(process.pid)),
                "rss": process.rss,
                "pss": process.pss,
                "fd_refs": process.fd_refs,
                "map_refs": process.map_refs,
                "buffers": [{"inode": inode, "fds": refs.fds, "maps": refs.maps}
                            for inode, refs in sorted(process.buffers.items())],
            }
            for process in inventory.processes
        ],
        "cgroups": None if inventory.cgroups is None else cgroups_dict(cgroup_totals(inventory, cgroup_of, creators)),
    }


def cgroups_dict(totals) -> dict:
    """A cgroup_totals.CgroupTotals as JSON-ready values (paths twice: lossy text and exact hex)."""
    return {
        "total_bytes": totals.total_bytes,
        "shared_buffers": totals.shared_buffers,
        "shared_bytes": totals.shared_bytes,
        "creators_known": totals.creators_known,
        "creator_not_known_buffers": totals.creator_not_known_buffers,
        "creator_not_known_bytes": totals.creator_not_known_bytes,
        "rows": [{"kind": row.kind, "cgroup": _lossy(row.path), "cgroup_hex": _hex(row.path),
                  "short": row.short.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                  "processes": row.processes, "buffers": row.buffers, "held_bytes": row.held_bytes,
                  "shared_bytes": row.shared_bytes, "created_buffers": row.created_buffers,
                  "created_bytes": row.created_bytes} for row in totals.rows],
    }


def _buffer_dict(entry) -> dict:
    buffer = entry.buffer
    return {
        "inode": buffer.inode,
        "size": buffer.size,
        "exporter": buffer.exporter,
        "name": _lossy(buffer.name),
        "name_hex": _hex(buffer.name),
        "file_refs": buffer.file_refs,
        "kernel_refs": entry.kernel_refs,
        "fd_refs": entry.fd_refs,
        "map_refs": entry.map_refs,
        "attachments": buffer.attachment_count,
        "devices": list(buffer.attached_devices),
        "vmapped": buffer.vmapped,
        "backing_inode": buffer.backing_inode or None,
        "backing_dev": buffer.backing_dev or None,
        "kernel_only": entry.kernel_only,
        "holders": [{"pid": pid, "fds": refs.fds, "maps": refs.maps} for pid, refs in sorted(entry.holders.items())],
    }


def render_json(inventory) -> str:
    return json.dumps(to_dict(inventory), indent=2, ensure_ascii=True)


# ---------------------------------------------------------------------------
# Text tables


def _unknown(value, show=str):
    return "?" if value is None else show(value)


def _cell(refs):
    return f"{refs.fds}({refs.maps})" if refs else ""


def _table(headers, rows, right=()):
    """Aligned columns; the last column is left free (names)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, value in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(value))
    lines = []
    for row in [headers] + rows:
        cells = []
        for index, value in enumerate(row):
            if index == len(row) - 1:
                cells.append(value)
            elif index in right:
                cells.append(value.rjust(widths[index]))
            else:
                cells.append(value.ljust(widths[index]))
        lines.append("  ".join(cells).rstrip())
    return lines


def source_line(inventory) -> str:
    line = (f"source: {inventory.source} ({SOURCE_DESCRIPTIONS[inventory.source]}); "
            f"holders: {inventory.holders_source} ({HOLDER_DESCRIPTIONS[inventory.holders_source]})")
    return "\n".join([line] + [f"note: {note}" for note in inventory.notes])


def totals_line(inventory) -> str:
    totals = inventory.totals
    return (f"dmabuf total: {human_size(totals.bytes)} in {totals.buffers} buffers  "
            f"kernel-only: {human_size(totals.kernel_only_bytes)} in {totals.kernel_only_buffers}  "
            f"userspace RSS: {human_size(totals.userspace_rss)}  PSS: {human_size(totals.userspace_pss)}")


def render_processes(inventory) -> str:
    """dmabuf_dump's default: one block per process with the buffers it holds, then the totals."""
    lines = [source_line(inventory), ""]
    entries = {entry.inode: entry for entry in inventory.buffers}
    for process in inventory.processes:
        lines.append(f"{terminal_safe(process.comm, none='?')}:{process.pid}")
        rows = []
        for inode, refs in sorted(process.buffers.items(), key=lambda item: (-entries[item[0]].size, item[0])):
            entry = entries[inode]
            rows.append([str(inode), _unknown(entry.buffer.exporter), human_size(entry.size),
                         human_size(entry.size // len(entry.holders)), str(len(entry.holders)), _cell(refs),
                         terminal_safe(entry.buffer.name)])
        lines.extend("  " + line for line in _table(
            ["INODE", "EXPORTER", "SIZE", "PSS", "PROCS", "FD(MAP)", "NAME"], rows, right=(0, 2, 3, 4)))
        lines.append(f"  PROCESS TOTAL  RSS {human_size(process.rss)}  PSS {human_size(process.pss)}  "
                     f"fds {process.fd_refs}  mappings {process.map_refs}")
        lines.append("")
    kernel_only = [entry for entry in inventory.buffers if entry.kernel_only]
    if kernel_only:
        lines.append("held by the kernel only")
        rows = [[str(e.inode), _unknown(e.buffer.exporter), human_size(e.size), _unknown(e.kernel_refs),
                 terminal_safe(e.buffer.name)] for e in kernel_only]
        lines.extend("  " + line for line in _table(["INODE", "EXPORTER", "SIZE", "REFS", "NAME"], rows,
                                                    right=(0, 2, 3)))
        lines.append("")
    lines.append(totals_line(inventory))
    return "\n".join(lines)


def _holders_text(entry):
    if not entry.holders:
        return "kernel"
    return " ".join(f"{pid}:{_cell(refs)}" for pid, refs in sorted(entry.holders.items()))


def render_buffers(inventory) -> str:
    rows = [[str(e.inode), _unknown(e.buffer.exporter), human_size(e.size), _unknown(e.buffer.file_refs),
             _unknown(e.kernel_refs), _unknown(e.buffer.attachment_count), _holders_text(e),
             terminal_safe(e.buffer.name)] for e in inventory.buffers]
    headers = ["INODE", "EXPORTER", "SIZE", "REFS", "KREFS", "ATT", "HOLDERS PID:FD(MAP)", "NAME"]
    return "\n".join([source_line(inventory), ""] + _table(headers, rows, right=(0, 2, 3, 4, 5))
                     + ["", totals_line(inventory)])


def render_exporters(inventory) -> str:
    rows = [[str(e.buffers), human_size(e.bytes), _unknown(e.exporter)] for e in inventory.exporters]
    return "\n".join([source_line(inventory), ""] + _table(["BUFFERS", "SIZE", "EXPORTER"], rows, right=(0, 1))
                     + ["", totals_line(inventory)])


def render_grid(inventory) -> str:
    """Buffers x processes, each cell fd(map) refs, like `dmabuf_dump -a`."""
    pids = sorted(process.pid for process in inventory.processes)
    headers = ["INODE", "SIZE", "EXPORTER"] + [str(pid) for pid in pids] + ["NAME"]
    rows = [[str(e.inode), human_size(e.size), _unknown(e.buffer.exporter)]
            + [_cell(e.holders.get(pid)) or "-" for pid in pids] + [terminal_safe(e.buffer.name)]
            for e in inventory.buffers]
    comms = "  ".join(f"{pid}={terminal_safe(p.comm, none='?')}" for pid, p in
                      sorted((p.pid, p) for p in inventory.processes))
    return "\n".join([source_line(inventory), f"processes: {comms}" if comms else "processes: none", ""]
                     + _table(headers, rows, right=tuple(range(0, 2)) + tuple(range(3, 3 + len(pids))))
                     + ["", totals_line(inventory)])


def _created(row):
    return "not known" if row.created_bytes is None else human_size(row.created_bytes)


def render_cgroups(inventory, creators=None) -> str:
    """One row per cgroup of the holders (cgroup_totals.py has the rules), then unknown and kernel-only."""
    totals = cgroup_totals(inventory, inventory.cgroups or {}, creators)
    rows = [[terminal_safe(row.short), str(row.processes), str(row.buffers), human_size(row.held_bytes),
             human_size(row.shared_bytes), _created(row), "" if row.path is None else terminal_safe(row.path)]
            for row in totals.rows]
    lines = [source_line(inventory), ""]
    if inventory.cgroups is None:
        lines.append("note: the holders' cgroups were not read: every holder is under 'unknown cgroup'")
    lines += _table(["CGROUP", "PROCS", "BUFFERS", "HELD", "SHARED", "CREATED", "PATH"], rows, right=(1, 2, 3, 4, 5))
    lines += ["", f"shared between cgroups: {human_size(totals.shared_bytes)} in {totals.shared_buffers} buffers "
              "(in the HELD and SHARED of each cgroup holding them, counted once here)"]
    if totals.creator_not_known_buffers:
        lines.append(f"creator: not known for {human_size(totals.creator_not_known_bytes)} in "
                     f"{totals.creator_not_known_buffers} buffers (created before tracing, or no lifecycle probe)")
    return "\n".join(lines + ["", totals_line(inventory)])


VIEWS = {"processes": render_processes, "buffers": render_buffers, "exporters": render_exporters,
         "grid": render_grid, "cgroups": render_cgroups}


def render_table(inventory, view="processes") -> str:
    return VIEWS[view](inventory)


# ---------------------------------------------------------------------------
# CSV


def _csv_name(raw):
    return terminal_safe(raw, none="")


def csv_rows(inventory, view="processes"):
    """(header, rows) of the view as CSV cells: exact bytes, escaped names."""
    if view == "buffers":
        header = ["inode", "size", "exporter", "named", "name", "file_refs", "kernel_refs", "fd_refs", "map_refs",
                  "attachments", "processes", "kernel_only"]
        rows = [[e.inode, e.size, e.buffer.exporter or "", int(e.buffer.name is not None), _csv_name(e.buffer.name),
                 _blank(e.buffer.file_refs), _blank(e.kernel_refs), e.fd_refs, e.map_refs,
                 _blank(e.buffer.attachment_count), len(e.holders), int(e.kernel_only)] for e in inventory.buffers]
    elif view == "cgroups":
        header = ["kind", "cgroup", "short", "processes", "buffers", "held_bytes", "shared_bytes", "created_bytes"]
        rows = [[row.kind, _csv_name(row.path), _csv_name(row.short), row.processes, row.buffers, row.held_bytes,
                 row.shared_bytes, _blank(row.created_bytes)]
                for row in cgroup_totals(inventory, inventory.cgroups or {}).rows]
    elif view == "exporters":
        header = ["exporter", "buffers", "bytes"]
        rows = [[e.exporter or "", e.buffers, e.bytes] for e in inventory.exporters]
    elif view == "grid":
        pids = sorted(process.pid for process in inventory.processes)
        header = ["inode", "size", "exporter", "named", "name"] + [f"pid {pid}" for pid in pids]
        rows = [[e.inode, e.size, e.buffer.exporter or "", int(e.buffer.name is not None), _csv_name(e.buffer.name)]
                + [_cell(e.holders.get(pid)) for pid in pids] for e in inventory.buffers]
    else:
        header = ["pid", "comm", "buffers", "fd_refs", "map_refs", "rss", "pss"]
        rows = [[p.pid, _csv_name(p.comm), len(p.buffers), p.fd_refs, p.map_refs, p.rss, p.pss]
                for p in inventory.processes]
    return header, rows


def _blank(value):
    return "" if value is None else value


def render_csv(inventory, view="processes") -> str:
    header, rows = csv_rows(inventory, view)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
