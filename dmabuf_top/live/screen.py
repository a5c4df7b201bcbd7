"""From a Frame and a ViewState to screen lines: pure, so it is tested at a fixed size without a terminal.

`render(frame, view, width, height)` returns exactly `height` lines, each a list
of (text, attribute) segments whose texts add up to at most `width` characters.
Attributes are names ("title", "header", "sorted", "new", "freed", "warn",
"footer", "dim", "normal"); app.py maps them to curses attributes. Text from
the kernel (buffer names, comms) is already escaped by the model
(text.terminal_safe), so nothing here can move the cursor.

`render_table` is the batch (-C) form of the same pane: plain text, no attributes.
"""
from __future__ import annotations

import textwrap
import time
from typing import List, Optional, Sequence, Tuple

from ..inventory.inventory import HOLDER_DESCRIPTIONS, SOURCE_DESCRIPTIONS
from ..text import human_size
from .columns import COLUMNS, FILL_MIN, PANE_TITLES, PANES, Column, format_cell, shown_columns
from .model import Frame
from .view import ViewState, visible_rows

Segment = Tuple[str, str]
Line = List[Segment]


def _fit(text: str, width: int, left: bool) -> str:
    if len(text) > width:
        return text[: max(width - 1, 0)] + "~" if width > 1 else text[:width]
    return text.ljust(width) if left else text.rjust(width)


def _widths(columns: Sequence[Column], width: int) -> List[int]:
    """Declared widths; a 0-width column (the last, e.g. NAME) takes what is left of the line."""
    fixed = sum(c.width + 1 for c in columns if c.width)
    return [c.width or max(width - fixed, FILL_MIN) for c in columns]


def header_lines(frame: Frame, view: Optional[ViewState] = None, width: Optional[int] = None) -> List[Line]:
    """The header; with a width, what cannot be seen wraps onto at most three lines instead of being cut."""
    clock = time.strftime("%H:%M:%S", time.localtime(frame.wall))
    measured = f"{frame.elapsed:.2f}s" if frame.elapsed is not None else "first sample"
    first = f"dmabuf-top {clock}  kernel {frame.kernel}  interval {frame.interval:g}s (measured {measured})"
    if frame.pid is not None:
        first += f"  pid {frame.pid}"
    lines: List[Line] = [[(first, "title")] + ([("  PAUSED", "warn")] if view is not None and view.paused else [])]
    totals = frame.totals
    by_exporter = "  ".join(f"{e.exporter or '?'} {e.buffers}/{human_size(e.bytes)}" for e in frame.exporters)
    lines.append([(f"buffers {totals.buffers}  bytes {human_size(totals.bytes)}"
                   f"  kernel-only {totals.kernel_only_buffers}  rss {human_size(totals.userspace_rss)}"
                   + (f"  | {by_exporter}" if by_exporter else ""), "normal")])
    lines.append([(f"inventory: {SOURCE_DESCRIPTIONS.get(frame.source, frame.source)}; holders: "
                   f"{HOLDER_DESCRIPTIONS.get(frame.holders_source, frame.holders_source)}", "normal")])
    dropped = "-" if frame.dropped is None else str(frame.dropped)
    if frame.tracing_pending:
        hooks: Line = [("hooks: starting (feature trials, BPF load); I/O rates follow", "warn")]
    else:
        hooks = [(f"hooks live: {' '.join(frame.live_concerns) or 'none'}", "normal")]
    if frame.missing:
        hooks.append((f"  missing: {' '.join(sorted(frame.missing))}", "warn"))
    hooks.append((f"  dropped events: {dropped}", "normal"))
    for name, refused in sorted((frame.map_full or {}).items()):
        if refused:  # those keys' I/O is missing from the rates: said next to the drops, in warning colour
            hooks.append((f"  map full: {name} refused {refused} new keys", "warn"))
    lines.append(hooks)
    cannot = list(frame.cannot_see) + [f"{concern} not traced ({reason})"
                                       for concern, reason in sorted(frame.missing.items())
                                       if concern not in ("tracing",)]
    if not cannot:
        lines.append([("cannot see: nothing missing", "dim")])
    elif width is None:
        lines.append([("cannot see: " + "; ".join(cannot), "warn")])
    else:
        wrapped = textwrap.wrap("cannot see: " + "; ".join(cannot), width, subsequent_indent="  ")
        lines += [[(text, "warn")] for text in wrapped[:3]]
    return lines


def tab_line(frame: Frame, view: ViewState) -> Line:
    line: Line = []
    for index, pane in enumerate(PANES, 1):
        label = f" {index}:{PANE_TITLES[pane]} "
        line.append((f"[{label.strip()}]" if pane == view.pane else label, "title" if pane == view.pane else "dim"))
        line.append((" ", "normal"))
    arrow = "^" if view.reverse[view.pane] else "v"
    line.append((f" sort: {view.sort[view.pane]} {arrow}", "normal"))
    if view.editing_filter is not None:
        line.append((f"  filter: {view.editing_filter}_", "warn"))
    elif view.filter:
        line.append((f"  filter: {view.filter}", "warn"))
    return line


def table_header(pane: str, view: Optional[ViewState], widths: List[int],
                 columns: Optional[Sequence[Column]] = None) -> Line:
    line: Line = []
    sorted_key = view.sort[pane] if view is not None else None
    for col, width in zip(columns or COLUMNS[pane], widths):
        line.append((_fit(col.label, width, col.left), "sorted" if col.key == sorted_key else "header"))
        line.append((" ", "header"))
    return line


def row_line(pane: str, row, widths: List[int], not_traced: set, columns: Optional[Sequence[Column]] = None) -> Line:
    attr = row.state or "normal"
    not_traced = not_traced | row.extra.get("untraced", set())  # a path whose own hooks are missing or absent
    unavailable = row.unavailable
    cells = []
    for col, width in zip(columns or COLUMNS[pane], widths):
        cells.append(_fit(format_cell(col, row.values.get(col.key), col.key in not_traced, col.key in unavailable),
                          width, col.left))
    return [(" ".join(cells), attr)]


FOOTER_HINT = f"q quit  Tab/1-{len(PANES)} pane  < > sort  r reverse  / filter  Esc clear  space pause  arrows scroll"


def render(frame: Optional[Frame], view: ViewState, width: int, height: int, footer: str = FOOTER_HINT) -> List[Line]:
    if frame is None:
        lines: List[Line] = [[("dmabuf-top: taking the first sample...", "title")]]
    else:
        lines = header_lines(frame, view, width)
        columns = shown_columns(view.pane, width, keep=view.sort[view.pane])
        hidden = [c.label for c in COLUMNS[view.pane] if c not in columns]
        lines.append(tab_line(frame, view) + ([(f"  hidden: {', '.join(hidden)}", "dim")] if hidden else []))
        widths = _widths(columns, width)
        lines.append(table_header(view.pane, view, widths, columns))
        rows = visible_rows(frame, view)
        room = max(height - len(lines) - 1, 0)
        view.scroll = max(0, min(view.scroll, max(len(rows) - room, 0)))
        not_traced = frame.not_traced(view.pane)
        for row in rows[view.scroll : view.scroll + room]:
            lines.append(row_line(view.pane, row, widths, not_traced, columns))
        if not rows:
            lines.append([("(no rows" + (f" match '{view.filter}')" if view.filter else ")"), "dim")])
        shown = f" {view.scroll + 1}-{min(view.scroll + room, len(rows))} of {len(rows)} " if rows else " 0 rows "
        footer = shown + " " + footer
    lines = lines[: height - 1]
    lines += [[]] * (height - 1 - len(lines))
    lines.append([(footer, "footer")])
    return [clip(line, width) for line in lines]


def clip(line: Line, width: int) -> Line:
    out, used = [], 0
    for text, attr in line:
        if used >= width:
            break
        text = text[: width - used]
        out.append((text, attr))
        used += len(text)
    return out


def line_text(line: Line) -> str:
    return "".join(text for text, _ in line)


def render_table(frame: Frame, pane: str, view: ViewState, max_rows: Optional[int] = None, width: int = 160) -> str:
    """One interval as plain text for -C/--no-clear: the header, then the pane's table."""
    lines = [line_text(line) for line in header_lines(frame)]
    widths = _widths(COLUMNS[pane], width)
    lines.append(line_text(table_header(pane, None, widths)).rstrip())
    rows = visible_rows(frame, ViewState(pane=pane, sort=view.sort, reverse=view.reverse, filter=view.filter))
    not_traced = frame.not_traced(pane)
    for row in rows[:max_rows] if max_rows else rows:
        marker = {"new": "+", "freed": "-"}.get(row.state, "")
        lines.append((line_text(row_line(pane, row, widths, not_traced)) + (f" {marker}" if marker else "")).rstrip())
    return "\n".join(lines)
