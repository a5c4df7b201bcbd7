"""The `trace` command's text: per-path totals, what is not traced and why, dropped events, full maps.

Pure: tested without a kernel, from a trace_model.TraceSnapshot's parts.
"""
from .text import human_size
from .trace_model import COLUMN_CONCERNS, NOT_TRACED

COLUMNS = ("calls", "errors", "bytes", "cpu_copied", "pinned_pages", "got_pages", "pc_added", "pc_removed")


def render_text(per_path, missing, dropped, elapsed_s=None, map_full=None):
    """Per-path totals as a table, then what is not traced and why, then the dropped-event count
    and, for each full map, how many new keys it refused (what they carried is not in the table)."""
    header = f"{'path':<16}" + "".join(f"{name:>13}" for name in COLUMNS) + f"{'avg lat':>11}"
    lines = [header]
    for path, counters in sorted(per_path.items()):
        cells = []
        for name in COLUMNS:
            value = getattr(counters, name)
            if COLUMN_CONCERNS.get(name) in missing:
                cells.append(NOT_TRACED)
            else:
                cells.append(human_size(value) if name in ("bytes", "cpu_copied") else str(value))
        average = f"{counters.latency_ns / counters.calls / 1000:.1f}us" if counters.calls else "-"
        lines.append(f"{path:<16}" + "".join(f"{cell:>13}" for cell in cells) + f"{average:>11}")
    if len(lines) == 1:
        lines.append("(no traced I/O)")
    if elapsed_s:
        lines.append(f"over {elapsed_s:.2f} s")
    for concern, reason in sorted(missing.items()):
        lines.append(f"{NOT_TRACED} = not traced: {concern}: {reason}")
    lines.append(f"dropped events: {dropped}")
    lines += map_full_lines(map_full or {})
    return "\n".join(lines)


def map_full_lines(map_full):
    """One line per map that refused new keys: the numbers are low bounds of what went uncounted."""
    return [f"map full: {name} refused {count} new keys (what they would have counted is missing from it)"
            for name, count in sorted(map_full.items()) if count]
